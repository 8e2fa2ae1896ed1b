from django.urls import path

from . import views

app_name = "resident"
urlpatterns = [
    path("", views.my_requests, name="my_requests"),
    path("sign-in/<str:token>/", views.sign_in, name="sign_in"),
    path("sign-out/", views.sign_out, name="sign_out"),
]
