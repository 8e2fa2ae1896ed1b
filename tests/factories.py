import factory
from django.contrib.auth import get_user_model

from requests_app.models import (
    Channel,
    Department,
    ServiceAttribute,
    ServiceCategory,
    ServiceRequest,
    StaffProfile,
    StaffRole,
)

# Inside the default service area (SERVICE_AREA_BBOX).
CITY_CENTER = (42.3550, -71.0650)


class DepartmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Department
        django_get_or_create = ["slug"]

    name = factory.Sequence(lambda n: f"Department {n}")
    slug = factory.Sequence(lambda n: f"department-{n}")
    email = factory.LazyAttribute(lambda d: f"{d.slug}@city.example")


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ServiceCategory
        django_get_or_create = ["code"]

    code = factory.Sequence(lambda n: f"category-{n}")
    name = factory.Sequence(lambda n: f"Category {n}")
    group = "Streets and sidewalks"
    department = factory.SubFactory(DepartmentFactory)
    sla_hours = 72


class QuestionFactory(factory.django.DjangoModelFactory):
    """A category's question: QuestionFactory(category=c, code=..., datatype=...)."""

    class Meta:
        model = ServiceAttribute

    category = factory.SubFactory(CategoryFactory)
    code = factory.Sequence(lambda n: f"question-{n}")
    datatype = ServiceAttribute.Datatype.STRING
    description = factory.Sequence(lambda n: f"Question {n}?")
    order = 1


def question(category, code, datatype, description, order, **options):
    """QuestionFactory with the fields a test states, in the order it states them."""
    return QuestionFactory(
        category=category,
        code=code,
        datatype=datatype,
        description=description,
        order=order,
        **options,
    )


class ServiceRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ServiceRequest

    category = factory.SubFactory(CategoryFactory)
    description = "Deep pothole in the right lane"
    lat, lng = CITY_CENTER
    address = "12 Main St"
    channel = Channel.WEB
    reporter_name = "Maria Lopez"
    reporter_email = "maria@example.org"
    reporter_phone = "617-555-0142"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@city.example")
    is_staff = True


def staff_user(username, role, department=None):
    user = UserFactory(username=username, is_superuser=role == StaffRole.ADMINISTRATOR)
    StaffProfile.objects.update_or_create(
        user=user, defaults={"role": role, "department": department}
    )
    return user
