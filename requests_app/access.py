"""Who may see which requests: decided here and nowhere else.

Every staff view, the admin's querysets, the API and the exports go through these
functions; something a user may not see answers 404, exactly like something missing.
"""

from django.http import Http404

from .models import Photo, ServiceRequest, StaffRole

SEE_EVERYTHING = {StaffRole.DISPATCHER, StaffRole.DIRECTOR, StaffRole.ADMINISTRATOR}


def staff_role(user) -> str | None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return None
    if user.is_superuser:
        return StaffRole.ADMINISTRATOR
    profile = getattr(user, "staff_profile", None)
    return profile.role if profile else None


def visible_requests(user):
    """The requests `user` may see as staff (none for residents and strangers)."""
    role = staff_role(user)
    requests = ServiceRequest.objects.all()
    if role in SEE_EVERYTHING:
        return requests
    if role == StaffRole.DEPARTMENT_STAFF:
        return requests.filter(department_id=user.staff_profile.department_id)
    # Crew members see their work orders, not the request queue.
    return requests.none()


def can_edit_requests(user) -> bool:
    return staff_role(user) in {
        StaffRole.DISPATCHER,
        StaffRole.ADMINISTRATOR,
        StaffRole.DEPARTMENT_STAFF,
    }


def public_request_or_404(tracking_number):
    try:
        return (
            ServiceRequest.objects.public()
            .select_related("category", "department")
            .get(tracking_number=tracking_number)
        )
    except ServiceRequest.DoesNotExist:
        raise Http404 from None


def photo_for_viewer_or_404(user, photo_id) -> Photo:
    photo = Photo.objects.select_related("request").filter(pk=photo_id).first()
    if photo is None:
        raise Http404
    if photo.is_public and photo.request.is_public:
        return photo
    if visible_requests(user).filter(pk=photo.request_id).exists():
        return photo
    raise Http404
