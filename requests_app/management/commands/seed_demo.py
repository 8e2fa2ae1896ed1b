"""A believable demo city: departments, categories with SLAs, staff for every role and a few
hundred requests in every state, spread over the service area. Safe to run again."""

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from requests_app import service_area
from requests_app.models import (
    Channel,
    CloseReason,
    Comment,
    Crew,
    Department,
    HistoryEntry,
    Priority,
    ServiceAttribute,
    ServiceCategory,
    ServiceRequest,
    StaffProfile,
    StaffRole,
    Status,
    WorkOrder,
    WorkOrderStatus,
)
from requests_app.rollups import rollups_refresh

# Per-category questions: (code, datatype, question, hint, choices).
DEMO_QUESTIONS = {
    "pothole": [
        (
            "size",
            "singlevaluelist",
            "How big is it?",
            "",
            [
                ("small", "Smaller than a dinner plate"),
                ("medium", "About the size of a car tyre"),
                ("large", "Wider than a car tyre"),
            ],
        ),
        (
            "where",
            "singlevaluelist",
            "Where is it?",
            "",
            [
                ("traffic-lane", "In a traffic lane"),
                ("bike-lane", "In a bike lane"),
                ("crosswalk", "In a crosswalk"),
                ("curb", "Along the curb"),
            ],
        ),
    ],
    "streetlight": [
        (
            "pole-number",
            "string",
            "The number on the pole, if you can see it",
            "Usually on a small plate at eye level",
            [],
        ),
    ],
    "illegal-dumping": [
        (
            "items",
            "multivaluelist",
            "What was left there?",
            "Choose all that apply",
            [
                ("furniture", "Furniture or mattresses"),
                ("tires", "Tyres"),
                ("construction", "Construction debris"),
                ("household", "Bags of household trash"),
                ("hazardous", "Paint, oil or chemicals"),
            ],
        ),
    ],
}

# The same questions in Spanish: (question, hint, {choice key: name}).
DEMO_QUESTIONS_ES = {
    ("pothole", "size"): (
        "¿Qué tamaño tiene?",
        "",
        {
            "small": "Más pequeño que un plato",
            "medium": "Como la rueda de un coche",
            "large": "Más ancho que la rueda de un coche",
        },
    ),
    ("pothole", "where"): (
        "¿Dónde está?",
        "",
        {
            "traffic-lane": "En un carril de tráfico",
            "bike-lane": "En un carril bici",
            "crosswalk": "En un paso de peatones",
            "curb": "Junto al bordillo",
        },
    ),
    ("streetlight", "pole-number"): (
        "El número de la farola, si lo ves",
        "Suele estar en una placa pequeña a la altura de los ojos",
        {},
    ),
    ("illegal-dumping", "items"): (
        "¿Qué dejaron allí?",
        "Elige todo lo que corresponda",
        {
            "furniture": "Muebles o colchones",
            "tires": "Neumáticos",
            "construction": "Escombros de obra",
            "household": "Bolsas de basura doméstica",
            "hazardous": "Pintura, aceite o productos químicos",
        },
    ),
}

DEMO_PASSWORD = "civicdesk-demo"

DEPARTMENTS = {
    "streets": "Streets",
    "water": "Water",
    "parks": "Parks",
    "sanitation": "Sanitation",
    "traffic": "Traffic",
    "code": "Code Enforcement",
}

# Spanish names of the demo city's departments, groups and categories (the city enters its
# own in the admin).
DEPARTMENTS_ES = {
    "streets": "Calles",
    "water": "Agua",
    "parks": "Parques",
    "sanitation": "Limpieza",
    "traffic": "Tráfico",
    "code": "Inspección de normas",
}
GROUPS_ES = {
    "Streets and sidewalks": "Calles y aceras",
    "Lights and signals": "Alumbrado y señales",
    "Trees and parks": "Árboles y parques",
    "Trash and recycling": "Basura y reciclaje",
    "Water and sewer": "Agua y alcantarillado",
    "Neighbourhood": "Barrio",
}
CATEGORIES_ES = {
    "pothole": "Bache",
    "sidewalk": "Acera dañada",
    "street-cleaning": "Limpieza de calles",
    "snow-ice": "Nieve o hielo en la calle",
    "streetlight": "Farola apagada",
    "traffic-signal": "Problema con un semáforo",
    "sign-damaged": "Señal dañada o que falta",
    "tree-down": "Árbol caído",
    "tree-trim": "Árbol que necesita poda",
    "park-maintenance": "Mantenimiento de parques",
    "missed-trash": "Basura no recogida",
    "missed-recycling": "Reciclaje no recogido",
    "illegal-dumping": "Vertido ilegal",
    "graffiti": "Grafiti",
    "water-leak": "Fuga de agua",
    "hydrant": "Problema con un hidrante",
    "sewer-backup": "Atasco u olor de alcantarilla",
    "catch-basin": "Sumidero atascado",
    "abandoned-vehicle": "Vehículo abandonado",
    "overgrown-lot": "Solar abandonado con maleza",
    "noise": "Ruido de obras fuera de horario",
}

# code, name, group, department, SLA hours, priority, keywords, sample descriptions
CATEGORIES = [
    (
        "pothole",
        "Pothole",
        "Streets and sidewalks",
        "streets",
        72,
        Priority.NORMAL,
        "hole,road,asphalt",
        [
            "Deep pothole in the right lane",
            "Pothole opened up after the rain, cars swerving",
            "Two potholes by the crosswalk",
        ],
    ),
    (
        "sidewalk",
        "Damaged sidewalk",
        "Streets and sidewalks",
        "streets",
        240,
        Priority.LOW,
        "trip,crack,curb",
        ["Raised slab, people trip here", "Cracked sidewalk near the bus stop"],
    ),
    (
        "street-cleaning",
        "Street cleaning",
        "Streets and sidewalks",
        "streets",
        120,
        Priority.LOW,
        "debris,sweep",
        ["Broken glass all over the bike lane", "Leaves blocking the storm drain"],
    ),
    (
        "snow-ice",
        "Snow or ice on street",
        "Streets and sidewalks",
        "streets",
        12,
        Priority.HIGH,
        "snow,ice,plow",
        ["Street not plowed since yesterday", "Sheet of ice at the corner"],
    ),
    (
        "streetlight",
        "Streetlight out",
        "Lights and signals",
        "traffic",
        120,
        Priority.NORMAL,
        "light,lamp,dark",
        ["Streetlight out, whole block is dark", "Light flickers all night"],
    ),
    (
        "traffic-signal",
        "Traffic signal problem",
        "Lights and signals",
        "traffic",
        8,
        Priority.URGENT,
        "signal,red,green",
        ["Signal stuck on red in all directions", "Walk signal not working"],
    ),
    (
        "sign-damaged",
        "Damaged or missing sign",
        "Lights and signals",
        "traffic",
        72,
        Priority.NORMAL,
        "sign,stop",
        ["Stop sign knocked over", "Street name sign missing"],
    ),
    (
        "tree-down",
        "Tree down",
        "Trees and parks",
        "parks",
        4,
        Priority.URGENT,
        "tree,branch,fallen",
        ["Large tree fell across the road", "Big branch down on the sidewalk"],
    ),
    (
        "tree-trim",
        "Tree needs trimming",
        "Trees and parks",
        "parks",
        720,
        Priority.LOW,
        "branch,prune",
        ["Branches hanging low over the sidewalk", "Tree blocking the streetlight"],
    ),
    (
        "park-maintenance",
        "Park maintenance",
        "Trees and parks",
        "parks",
        168,
        Priority.LOW,
        "playground,bench",
        ["Broken swing at the playground", "Overflowing bins in the park"],
    ),
    (
        "missed-trash",
        "Missed trash pickup",
        "Trash and recycling",
        "sanitation",
        24,
        Priority.NORMAL,
        "trash,garbage,pickup",
        ["Trash not picked up on our street this week", "Truck skipped our building"],
    ),
    (
        "missed-recycling",
        "Missed recycling pickup",
        "Trash and recycling",
        "sanitation",
        48,
        Priority.NORMAL,
        "recycling,bin",
        ["Recycling not collected", "Blue bins still full"],
    ),
    (
        "illegal-dumping",
        "Illegal dumping",
        "Trash and recycling",
        "sanitation",
        72,
        Priority.NORMAL,
        "dumping,mattress,tires",
        ["Mattress and tires dumped in the alley", "Construction debris left by the lot"],
    ),
    (
        "graffiti",
        "Graffiti",
        "Trash and recycling",
        "sanitation",
        120,
        Priority.LOW,
        "graffiti,tag,paint",
        ["Graffiti on the underpass wall", "Tags on the school fence"],
    ),
    (
        "water-leak",
        "Water leak",
        "Water and sewer",
        "water",
        8,
        Priority.HIGH,
        "leak,water,flooding",
        ["Water bubbling up from the street", "Leak from a pipe at the curb, flooding the gutter"],
    ),
    (
        "hydrant",
        "Hydrant problem",
        "Water and sewer",
        "water",
        24,
        Priority.HIGH,
        "hydrant",
        ["Hydrant leaking", "Hydrant cap missing"],
    ),
    (
        "sewer-backup",
        "Sewer backup or odor",
        "Water and sewer",
        "water",
        12,
        Priority.HIGH,
        "sewer,smell,odor",
        ["Strong sewer smell from the drain", "Manhole overflowing"],
    ),
    (
        "catch-basin",
        "Clogged catch basin",
        "Water and sewer",
        "water",
        72,
        Priority.NORMAL,
        "drain,clogged,flooding",
        ["Storm drain clogged, street floods when it rains"],
    ),
    (
        "abandoned-vehicle",
        "Abandoned vehicle",
        "Neighbourhood",
        "code",
        168,
        Priority.LOW,
        "car,vehicle,abandoned",
        ["Car with flat tires parked for weeks", "Van without plates not moved in a month"],
    ),
    (
        "overgrown-lot",
        "Overgrown vacant lot",
        "Neighbourhood",
        "code",
        336,
        Priority.LOW,
        "weeds,lot,rats",
        ["Weeds waist-high on the vacant lot", "Rats seen in the overgrown yard"],
    ),
    (
        "noise",
        "Construction noise after hours",
        "Neighbourhood",
        "code",
        48,
        Priority.NORMAL,
        "noise,construction",
        ["Jackhammering at 11 pm", "Construction starting at 5 am"],
    ),
]

STAFF = [
    # username, first, last, role, department
    ("admin", "Alex", "Admin", StaffRole.ADMINISTRATOR, None),
    ("dispatcher", "Dana", "Dispatch", StaffRole.DISPATCHER, None),
    ("streets", "Sam", "Streets", StaffRole.DEPARTMENT_STAFF, "streets"),
    ("parks", "Pat", "Parks", StaffRole.DEPARTMENT_STAFF, "parks"),
    ("water", "Wes", "Water", StaffRole.DEPARTMENT_STAFF, "water"),
    ("crew", "Casey", "Crew", StaffRole.CREW, "streets"),
    ("director", "Drew", "Director", StaffRole.DIRECTOR, None),
]

STREETS = [
    "Maple St",
    "Oak Ave",
    "Washington St",
    "Main St",
    "Harbor Rd",
    "Elm St",
    "Cedar Ln",
    "Park Dr",
    "River St",
    "Summer St",
    "Beacon St",
    "Hill Rd",
    "Pine St",
    "School St",
    "Central Ave",
    "Lake St",
    "Mill Rd",
    "Church St",
    "Union Sq",
    "Chestnut St",
]

STATE_MIX = [
    (Status.RECEIVED, 10),
    (Status.ASSIGNED, 25),
    (Status.SCHEDULED, 10),
    (Status.IN_PROGRESS, 12),
    (Status.WAITING, 4),
    (Status.COMPLETED, 32),
    (Status.CLOSED, 7),
]
PATHS = {
    Status.RECEIVED: [],
    Status.ASSIGNED: [Status.ASSIGNED],
    Status.SCHEDULED: [Status.ASSIGNED, Status.SCHEDULED],
    Status.IN_PROGRESS: [Status.ASSIGNED, Status.SCHEDULED, Status.IN_PROGRESS],
    Status.WAITING: [Status.ASSIGNED, Status.WAITING],
    Status.COMPLETED: [Status.ASSIGNED, Status.IN_PROGRESS, Status.COMPLETED],
    Status.CLOSED: [Status.ASSIGNED, Status.CLOSED],
}
RESOLUTION_NOTES = {
    Status.COMPLETED: "Repaired by the crew.",
    Status.CLOSED: "",
}


class Command(BaseCommand):
    help = "Create a demo city with departments, categories, staff and a few hundred requests."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=300)
        parser.add_argument("--seed", type=int, default=311)

    @transaction.atomic
    def handle(self, *args, requests, seed, **options):
        rng = random.Random(seed)
        departments = {
            slug: Department.objects.update_or_create(
                slug=slug,
                defaults={"name_es": DEPARTMENTS_ES[slug]},
                create_defaults={
                    "name": name,
                    "name_es": DEPARTMENTS_ES[slug],
                    "email": f"{slug}@city.example",
                },
            )[0]
            for slug, name in DEPARTMENTS.items()
        }
        categories = []
        for code, name, group, dept, hours, priority, keywords, samples in CATEGORIES:
            category, _ = ServiceCategory.objects.update_or_create(
                code=code,
                defaults={
                    "name": name,
                    "name_es": CATEGORIES_ES[code],
                    "group": group,
                    "group_es": GROUPS_ES[group],
                    "department": departments[dept],
                    "sla_hours": hours,
                    "default_priority": priority,
                    "keywords": keywords,
                },
            )
            categories.append((category, samples))
        self._staff(departments)
        self._sla_policies(departments)
        self._questions()
        self._districts()
        call_command("seed_addresses", stdout=self.stdout)
        self.crews = self._crews(departments)
        self._rules(departments)

        existing = ServiceRequest.objects.count()
        to_create = max(0, requests - existing)
        for _ in range(to_create):
            self._request(rng, categories)
        # The dashboard reads the rollups as soon as they exist; beat refreshes them each minute.
        rollups_refresh(rebuild=True)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo city ready: {len(departments)} departments, {len(categories)} categories, "
                f"{ServiceRequest.objects.count()} requests ({to_create} new)."
            )
        )
        self.stdout.write(
            "Staff logins (password %r): %s"
            % (DEMO_PASSWORD, ", ".join(username for username, *_ in STAFF))
        )

    def _staff(self, departments):
        User = get_user_model()
        for username, first, last, role, dept in STAFF:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@city.example",
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
            user.is_staff = True
            user.is_superuser = role == StaffRole.ADMINISTRATOR
            user.save()
            StaffProfile.objects.update_or_create(
                user=user, defaults={"role": role, "department": departments.get(dept)}
            )

    def _sla_policies(self, departments):
        from datetime import date, time
        from decimal import Decimal

        from requests_app import sla
        from requests_app.models import EscalationStep, Holiday, SLAPolicy, WorkingCalendar

        calendar, _ = WorkingCalendar.objects.get_or_create(
            name="City hall", defaults={"day_starts": time(8), "day_ends": time(17)}
        )
        for day, name in [
            (date(2026, 11, 26), "Thanksgiving"),
            (date(2026, 12, 25), "Christmas Day"),
            (date(2027, 1, 1), "New Year's Day"),
            (date(2027, 1, 18), "Martin Luther King Jr. Day"),
        ]:
            Holiday.objects.get_or_create(calendar=calendar, date=day, defaults={"name": name})
        policies = {
            "emergency": ("Emergency: 4 hours around the clock", 1, 4, SLAPolicy.Clock.ALWAYS),
            "graffiti": ("Graffiti: 5 business days", 9, 45, SLAPolicy.Clock.BUSINESS),
        }
        made = {}
        for key, (name, ack, resolve, clock) in policies.items():
            policy, created = SLAPolicy.objects.get_or_create(
                name=name,
                defaults={
                    "acknowledge_hours": Decimal(ack),
                    "resolve_hours": Decimal(resolve),
                    "clock": clock,
                    "calendar": calendar,
                },
            )
            if created:
                for share, notify, raise_priority in sla.DEFAULT_LADDER:
                    EscalationStep.objects.create(
                        policy=policy, at_share=share, notify=notify, raise_priority=raise_priority
                    )
            made[key] = policy
        ServiceCategory.objects.filter(code__in=["tree-down", "traffic-signal"]).update(
            sla_policy=made["emergency"]
        )
        ServiceCategory.objects.filter(code="graffiti").update(sla_policy=made["graffiti"])
        User = get_user_model()
        for slug in ("streets", "parks", "water"):
            Department.objects.filter(slug=slug).update(supervisor=User.objects.get(username=slug))

    def _questions(self):
        """A few per-category questions, as a city's staff would add them in the admin.
        None is required: the demo's other channels file requests without answers."""
        Datatype = ServiceAttribute.Datatype
        for code, attributes in DEMO_QUESTIONS.items():
            category = ServiceCategory.objects.get(code=code)
            for order, (attribute, datatype, question, hint, values) in enumerate(attributes, 1):
                question_es, hint_es, names_es = DEMO_QUESTIONS_ES[code, attribute]
                ServiceAttribute.objects.update_or_create(
                    category=category,
                    code=attribute,
                    defaults={
                        "datatype": Datatype(datatype),
                        "description": question,
                        "description_es": question_es,
                        "datatype_description": hint,
                        "datatype_description_es": hint_es,
                        "order": order,
                        "values": [
                            {"key": key, "name": name, "name_es": names_es[key]}
                            for key, name in values
                        ],
                    },
                )

    def _districts(self):
        from routing.models import District

        min_lng, min_lat, max_lng, max_lat = service_area.bounds()
        rows, cols = 2, 3
        names = ["Harborside", "Downtown", "Riverside", "Hillcrest", "Midtown", "Southgate"]
        for index in range(rows * cols):
            row, col = divmod(index, cols)
            west = min_lng + (max_lng - min_lng) * col / cols
            east = min_lng + (max_lng - min_lng) * (col + 1) / cols
            north = max_lat - (max_lat - min_lat) * row / rows
            south = max_lat - (max_lat - min_lat) * (row + 1) / rows
            ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
            District.objects.update_or_create(
                code=f"district-{index + 1}",
                defaults={
                    "name": f"District {index + 1} – {names[index]}",
                    "boundary": {"type": "Polygon", "coordinates": [ring]},
                },
            )

    def _crews(self, departments):
        crews = {}
        for slug, department in departments.items():
            crews[slug] = [
                Crew.objects.get_or_create(name=f"Crew {n}", department=department)[0]
                for n in (1, 2)
            ]
        crew_user = get_user_model().objects.get(username="crew")
        crews["streets"][0].members.add(crew_user)
        return crews

    def _rules(self, departments):
        from routing.models import District, RoutingRule

        if RoutingRule.objects.exists():
            return
        RoutingRule.objects.create(
            name="Flooding or gas: urgent, to Water",
            position=10,
            keywords="flooding, flooded, gas leak, sinkhole",
            department=departments["water"],
            priority=Priority.URGENT,
        )
        potholes = RoutingRule.objects.create(
            name="Potholes in District 2", position=20, crew=self.crews["streets"][1]
        )
        potholes.categories.set(ServiceCategory.objects.filter(code="pothole"))
        potholes.districts.set(District.objects.filter(code="district-2"))
        trees = RoutingRule.objects.create(
            name="Trees down: Parks Crew 1",
            position=30,
            crew=self.crews["parks"][0],
            priority=Priority.URGENT,
        )
        trees.categories.set(ServiceCategory.objects.filter(code="tree-down"))
        RoutingRule.objects.create(
            name="Injured or near a school: high priority",
            position=40,
            keywords="injured, injury, school",
            priority=Priority.HIGH,
        )

    def _place(self, rng) -> dict:
        """Where a demo request is: an address of the demo gazetteer (seed_addresses), so
        that its address is found by the address search and sits where its pin does."""
        from routing.models import Address

        if not hasattr(self, "_addresses"):
            self._addresses = list(
                Address.objects.values_list("address", "lat", "lng", "address_id", "zipcode")
            )
        if not self._addresses:
            min_lng, min_lat, max_lng, max_lat = service_area.bounds()
            return {
                "lat": round(rng.uniform(min_lat + 0.01, max_lat - 0.01), 6),
                "lng": round(rng.uniform(min_lng + 0.01, max_lng - 0.01), 6),
                "address": f"{rng.randint(1, 400)} {rng.choice(STREETS)}",
            }
        address, lat, lng, address_id, zipcode = rng.choice(self._addresses)
        return {
            "lat": round(lat, 6),
            "lng": round(lng, 6),
            "address": address,
            "address_id": address_id,
            "zipcode": zipcode,
        }

    def _request(self, rng, categories):
        category, samples = rng.choice(categories)
        final = rng.choices([s for s, _ in STATE_MIX], weights=[w for _, w in STATE_MIX])[0]
        age = timedelta(hours=rng.uniform(0.5, 24 * 45))
        if final in (Status.RECEIVED,):
            age = timedelta(minutes=rng.uniform(5, 90))
        created = timezone.now() - age
        request = ServiceRequest(
            category=category,
            description=rng.choice(samples),
            **self._place(rng),
            channel=rng.choices(
                [Channel.WEB, Channel.PHONE, Channel.API, Channel.EMAIL, Channel.WALK_IN],
                weights=[50, 25, 12, 8, 5],
            )[0],
            priority=category.default_priority,
            reporter_name=rng.choice(["", "Maria Lopez", "John Chen", "Aisha Khan", "Tom Becker"]),
            reporter_email="",
            language=rng.choice(["en", "en", "en", "es"]),
            created_at=created,
            due_at=created + category.sla,
            intake_processed_at=created,
        )
        request.save()
        HistoryEntry.objects.create(
            request=request,
            at=created,
            actor_label="Resident",
            action=HistoryEntry.Action.CREATED,
            note=f"Received via {request.get_channel_display()}",
        )
        at = created
        previous = Status.RECEIVED
        for step in PATHS[final]:
            at = at + (timezone.now() - at) * rng.uniform(0.1, 0.5)
            if step == Status.ASSIGNED:
                request.department = category.department
                HistoryEntry.objects.create(
                    request=request,
                    at=at,
                    actor_label="Routing",
                    action=HistoryEntry.Action.DEPARTMENT,
                    field="department",
                    new_value=category.department.name,
                    note=f"Routed to {category.department}: default department for {category}",
                )
                request.first_response_at = at
            note = ""
            if step == Status.CLOSED:
                request.close_reason = rng.choice(list(CloseReason)).value
                note = CloseReason(request.close_reason).label
            HistoryEntry.objects.create(
                request=request,
                at=at,
                actor_label="Routing" if step == Status.ASSIGNED else "Crew",
                action=HistoryEntry.Action.STATUS,
                field="status",
                old_value=previous,
                new_value=step,
                note=note,
                is_public=True,
            )
            previous = step
        if final in (Status.COMPLETED, Status.CLOSED):
            request.resolved_at = at
        if final in (Status.IN_PROGRESS, Status.COMPLETED) and rng.random() < 0.4:
            Comment.objects.create(
                request=request,
                author_label="Crew",
                is_public=True,
                created_at=at,
                text=rng.choice(
                    [
                        "Crew on site today.",
                        "Materials ordered, repair scheduled.",
                        "Thanks for the report, we are on it.",
                    ]
                ),
            )
        if rng.random() < 0.2:
            Comment.objects.create(
                request=request,
                author_label="Dispatch",
                is_public=False,
                created_at=at,
                text="Called the reporter for the exact location.",
            )
        request.status = final
        from requests_app import sla
        from routing.services import district_for

        request.category = ServiceCategory.objects.select_related("sla_policy").get(pk=category.pk)
        for name, value in sla.schedule(request).items():
            setattr(request, name, value)
        # Demo history is old: steps already past are taken as done, not replayed as emails.
        now = timezone.now()
        escalation_level = 3 if request.due_at < now else int(request.at_risk_at < now)
        request.expected_at = request.due_at

        request.district = district_for(request.lat, request.lng)
        if final in (Status.SCHEDULED, Status.IN_PROGRESS, Status.COMPLETED):
            request.crew = rng.choice(self.crews[category.department.slug])
            request.work_order = WorkOrder.objects.create(
                department=category.department,
                crew=request.crew,
                priority=request.priority,
                status={
                    Status.SCHEDULED: WorkOrderStatus.SCHEDULED,
                    Status.IN_PROGRESS: WorkOrderStatus.IN_PROGRESS,
                    Status.COMPLETED: WorkOrderStatus.COMPLETED,
                }[final],
                scheduled_for=(at + timedelta(days=rng.randint(0, 3))).date(),
                labour_hours=round(rng.uniform(0.5, 6), 1) if final == Status.COMPLETED else None,
                cost=round(rng.uniform(80, 1500), 2) if final == Status.COMPLETED else None,
                resolution_note=RESOLUTION_NOTES[Status.COMPLETED]
                if final == Status.COMPLETED
                else "",
                created_at=at,
                completed_at=at if final == Status.COMPLETED else None,
            )
        request.save()
        sla.clock_set(request, level=escalation_level)
