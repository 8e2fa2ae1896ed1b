from celery import shared_task

from . import services


@shared_task
def dispatch_surveys():
    return services.survey_dispatch()
