from django.urls import path

from . import crew_views

app_name = "crew"
urlpatterns = [
    path("", crew_views.my_work, name="my_work"),
    path("work-orders/<int:pk>/", crew_views.work_order, name="work_order"),
    path("work-orders/<int:pk>/start/", crew_views.work_order_start, name="start"),
    path("work-orders/<int:pk>/photo/", crew_views.work_order_photo, name="photo"),
    path("work-orders/<int:pk>/complete/", crew_views.work_order_complete, name="complete"),
]
