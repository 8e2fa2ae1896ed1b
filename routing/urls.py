from django.urls import path

from . import views

app_name = "routing"
urlpatterns = [
    path("search/", views.search, name="address_search"),
    path("reverse/", views.reverse, name="address_reverse"),
]
