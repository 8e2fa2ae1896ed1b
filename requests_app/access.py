"""Who may see which requests: decided here and nowhere else.

Every staff view, the admin's querysets, the API and the exports go through these
functions; something a user may not see answers 404, exactly like something missing.
"""

from django.http import Http404

from .models import Crew, Photo, ServiceRequest, StaffRole, WorkOrder

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


def visible_work_orders(user):
    role = staff_role(user)
    orders = WorkOrder.objects.all()
    if role in SEE_EVERYTHING:
        return orders
    if role == StaffRole.DEPARTMENT_STAFF:
        return orders.filter(department_id=user.staff_profile.department_id)
    if role == StaffRole.CREW:
        return orders.filter(crew__members=user).distinct()
    return orders.none()


def assignable_crews(user):
    """Crews `user` may hand work to: their own department's, or all for dispatch."""
    role = staff_role(user)
    crews = Crew.objects.filter(is_active=True).select_related("department")
    if role in (StaffRole.DISPATCHER, StaffRole.ADMINISTRATOR):
        return crews
    if role == StaffRole.DEPARTMENT_STAFF:
        return crews.filter(department_id=user.staff_profile.department_id)
    return crews.none()


def work_order_for_crew_member_or_404(user, pk) -> WorkOrder:
    """The crew view: a member's own work orders only (dispatch may look too)."""
    order = visible_work_orders(user).filter(pk=pk).select_related("crew", "department").first()
    if order is None:
        raise Http404
    return order


def can_edit_requests(user) -> bool:
    return staff_role(user) in {
        StaffRole.DISPATCHER,
        StaffRole.ADMINISTRATOR,
        StaffRole.DEPARTMENT_STAFF,
    }


def can_see_dashboard(user) -> bool:
    """The dashboard, its map and its figures: the whole city's."""
    return staff_role(user) in {StaffRole.DIRECTOR, StaffRole.DISPATCHER, StaffRole.ADMINISTRATOR}


def can_export(user) -> bool:
    """Exports of requests: the dashboard's roles, and department staff, whose exports
    (from the admin list) hold their own department's requests (visible_requests)."""
    return can_see_dashboard(user) or staff_role(user) == StaffRole.DEPARTMENT_STAFF


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
    photo = Photo.objects.filter(pk=photo_id).first()
    if photo is None:
        raise Http404
    requests = (
        ServiceRequest.objects.filter(pk=photo.request_id)
        if photo.request_id
        else ServiceRequest.objects.filter(work_order_id=photo.work_order_id)
    )
    if photo.is_public and requests.filter(is_public=True).exists():
        return photo
    if visible_requests(user).filter(pk__in=requests.values("pk")).exists():
        return photo
    # A crew sees every photo of its work orders: its own and those of the requests in them.
    orders = visible_work_orders(user).filter(
        pk__in=[photo.work_order_id] if photo.work_order_id else requests.values("work_order_id")
    )
    if orders.exists():
        return photo
    raise Http404
