from django.conf import settings


def portal(request):
    return {"city_name": settings.CITY_NAME}
