"""How often routing sends real 311 requests to the agency the city really assigned.

    .venv/bin/python bench/routing_agreement.py [--data ../shared/data/311] [--grid 4]
        [--min-gain 2]

For Los Angeles (la/la311_types.csv, la311_agencies.csv, normalized/la_2020.jsonl) and New
York City (normalized/nyc_*.jsonl) it builds, in a throwaway SQLite database of its own, one
department per agency and the city's service categories, then replays held-out requests
through `routing.services.decide()` (no request rows, no history, no emails) and compares
the department chosen with the agency on the record.

Records are split by a stable hash of source_id: half to learn from, half to evaluate.
- LA: category defaults come from the type table (agency_id 0, "Other" and "Feedback", has
  no agency: those requests go to triage). NYC: the default is the category's most common
  agency in the training half; categories seen only in the evaluation half are not in the
  catalogue and count as not routed.
- Rules are learned from the training half and added in steps, replaying after each:
  1. category defaults only;
  2. + category-wide rules where the training half disagrees with the type table by at
     least --min-gain records (LA only: NYC defaults already are the training majority);
  3. + area and keyword rules for categories served by more than one agency in training:
     one per (category, grid district) or (category, subcategory phrase) whose training
     records mostly go to another agency than the category's route, if that wins at least
     --min-gain training records. Districts are a grid over the training points.
Only decide() is timed, in wall-clock and CPU seconds. Prints figures; asserts nothing.
"""

import argparse
import collections
import csv
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A rule must win at least this many training records over the route it replaces: with a
# few thousand records a single odd one is noise, not a pattern.
MIN_GAIN = 2
SPECIFIC_POSITION = 10  # area and keyword rules are tried before category-wide ones
CATEGORY_POSITION = 50


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "311"))
    parser.add_argument("--grid", type=int, default=4, help="grid districts per side")
    parser.add_argument("--min-gain", type=int, default=MIN_GAIN)
    args = parser.parse_args()
    data = Path(args.data)

    workdir = tempfile.mkdtemp(prefix="civicdesk-routing-agreement-")
    # DEBUG off: with DEBUG on Django logs every query, which would be timed with decide().
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir}/bench.sqlite3",
        CIVICDESK_VAR_DIR=workdir,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(40),  # throwaway; nothing is signed
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "civicdesk.settings"
    import django

    django.setup()
    from django.core.management import call_command

    try:
        call_command("migrate", verbosity=0)
        print(
            f"Split: records whose sha1(source_id) is even train the catalogue and rules; "
            f"the odd half is evaluated. Grid {args.grid}x{args.grid} districts per city, "
            f"rules need a training gain >= {args.min_gain}.\n"
        )
        la_records = _read_jsonl(data / "normalized" / "la_2020.jsonl")
        _run_city("Los Angeles", la_records, _la_catalogue(data / "la", la_records), args)
        nyc_records = []
        for path in sorted((data / "normalized").glob("nyc_*.jsonl")):
            nyc_records += _read_jsonl(path)
        _run_city("New York City", nyc_records, None, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_jsonl(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _is_training(record):
    return int(hashlib.sha1(record["source_id"].encode()).hexdigest(), 16) % 2 == 0


def _text(record):
    # What intake would see: the Open311 description ("Category - Subcategory" for NYC).
    return (record.get("georeport_post") or {}).get("description") or record["category"]


def _la_catalogue(la_dir, records):
    """Agencies {code: name} and {category: agency code or None} from LA's type table."""
    with open(la_dir / "la311_agencies.csv", encoding="utf-8") as f:
        agencies = {row["agency_id"]: row for row in csv.DictReader(f)}
    with open(la_dir / "la311_types.csv", encoding="utf-8") as f:
        types = list(csv.DictReader(f))
    defaults = {}
    for row in types:
        agency = agencies.get(row["agency_id"])  # agency_id 0 ("Other", "Feedback"): none
        defaults[row["data_code"]] = agency["data_code"] if agency else None
    unknown = {r["category"] for r in records} - set(defaults)
    if unknown:
        print(f"LA categories missing from the type table: {sorted(unknown)}")
    # BOS and LASAN are both "Sanitation Bureau"; department names must be unique.
    names = {a["data_code"]: f"{a['agency_name']} ({a['data_code']})" for a in agencies.values()}
    return names, defaults


def _run_city(city, records, catalogue, args):
    from requests_app.models import Department, ServiceCategory
    from routing.models import RoutingRule

    _retire_previous_city()
    prefix = "".join(word[0] for word in city.split()).lower()
    training = [r for r in records if _is_training(r)]
    evaluation = [r for r in records if not _is_training(r)]
    by_category = collections.defaultdict(collections.Counter)
    for record in training:
        by_category[record["category"]][record["agency"]] += 1

    if catalogue:
        agency_names, defaults = catalogue
        source = "type table"
    else:
        agency_names = {a: a for counts in by_category.values() for a in counts}
        defaults = {c: counts.most_common(1)[0][0] for c, counts in by_category.items()}
        source = "training majority"

    departments = {
        code: Department.objects.create(name=f"{city}: {name}", slug=f"{prefix}-{code.lower()}")
        for code, name in sorted(agency_names.items())
    }
    # Categories without an agency need some department (the field is required); an inactive
    # one makes decide() leave them in triage, as the type table intends.
    triage = Department.objects.create(
        name=f"{city}: no agency (triage)", slug=f"{prefix}-no-agency", is_active=False
    )
    categories, used_codes = {}, set(ServiceCategory.objects.values_list("code", flat=True))
    for name, agency in sorted(defaults.items()):
        code = _unique_slug(f"{prefix} {name}", used_codes)
        categories[name] = ServiceCategory.objects.create(
            code=code,
            name=name[:100],
            group=name.split(" - ")[0][:100],
            department=departments[agency] if agency else triage,
            sla_hours=72,
        )

    districts = _grid_districts(city, training, args.grid)
    multi = {c for c, counts in _counts(records).items() if len(counts) > 1}
    print(
        f"== {city}: {len(records)} records, {len(training)} training, "
        f"{len(evaluation)} evaluated =="
    )
    print(
        f"catalogue: {len(categories)} categories (defaults from the {source}), "
        f"{len(departments)} agencies, {len(districts)} grid districts"
    )
    print(
        "categories with more than one agency in the records: "
        + "; ".join(f"{c} {dict(_counts(records)[c])}" for c in sorted(multi))
    )

    results = [("category defaults only", _replay(evaluation, categories, multi))]

    routes = {name: defaults[name] for name in categories}
    category_rules = []
    for name, counts in sorted(by_category.items()):
        agency, n = counts.most_common(1)[0]
        if (
            name in categories
            and agency != routes[name]
            and n - counts[routes[name]] >= args.min_gain
        ):
            category_rules.append((name, agency, n - counts[routes[name]]))
            routes[name] = agency
    for name, agency, _gain in category_rules:
        rule = RoutingRule.objects.create(
            name=f"{name} -> {agency}"[:120],
            position=CATEGORY_POSITION,
            department=departments[agency],
        )
        rule.categories.add(categories[name])
    if category_rules:
        results.append(
            (f"+ {len(category_rules)} category-wide rules", _replay(evaluation, categories, multi))
        )

    specific = _learn_specific_rules(
        training, categories, routes, districts, departments, args.min_gain
    )
    for name, kind, condition, agency, _gain in specific:
        rule = RoutingRule.objects.create(
            name=f"{name} / {kind} {condition if kind == 'keyword' else condition.code}"[:120],
            position=SPECIFIC_POSITION,
            keywords=condition if kind == "keyword" else "",
            department=departments[agency],
        )
        rule.categories.add(categories[name])
        if kind == "district":
            rule.districts.add(condition)
    if specific:
        results.append(
            (f"+ {len(specific)} area/keyword rules", _replay(evaluation, categories, multi))
        )

    for name, agency, gain in category_rules:
        print(f"  category rule: {name} -> {agency} (training gain {gain})")
    for name, kind, condition, agency, gain in specific:
        shown = condition if kind == "keyword" else condition.code
        print(f"  {kind} rule: {name} / {shown} -> {agency} (training gain {gain})")
    if not specific:
        print("  no area or keyword rule gains enough training records")

    print(
        f"{'configuration':<30} {'records':>7} {'routed':>7} {'agree':>7} {'agree %':>8} "
        f"{'multi-agency agree':>19} {'decide()/s wall':>15} {'/CPU s':>7}"
    )
    for label, r in results:
        multi_share = (
            f"{r['multi_agree']}/{r['multi']} {_pct(r['multi_agree'], r['multi'])}"
            if r["multi"]
            else "none evaluated"
        )
        print(
            f"{label:<30} {r['records']:>7} {r['routed']:>7} {r['agree']:>7} "
            f"{_pct(r['agree'], r['records']):>8} {multi_share:>19} {r['rate']:>15.0f} "
            f"{r['cpu_rate']:>7.0f}"
        )
    last = results[-1][1]
    print(
        f"of the routed records, {_pct(last['agree'], last['routed'])} agree; "
        f"not routed: {last['unseen']} in a category unseen in training, "
        f"{last['triage']} left to triage"
    )
    print("top disagreements (category: routed to -> really; count), last configuration:")
    for (category, got, real), n in last["disagreements"].most_common(10):
        print(f"  {category}: {got} -> {real}; {n}")
    _print_query_cost(categories, evaluation, city)
    print()


def _counts(records):
    counts = collections.defaultdict(collections.Counter)
    for record in records:
        counts[record["category"]][record["agency"]] += 1
    return counts


def _unique_slug(name, used):
    from django.utils.text import slugify

    base = slugify(name)[:46]
    code, n = base, 1
    # NYC has "Plumbing" and "PLUMBING" as separate complaint types.
    while code in used:
        n += 1
        code = f"{base}-{n}"
    used.add(code)
    return code


def _retire_previous_city():
    """Deactivate the previous city's rules and districts; its rows stay.

    Deleting categories would cascade into every app's tables, so a city's catalogue is
    kept apart by prefixed codes instead. save(), not update(): the district cache of
    routing.services is keyed on updated_at, which update() leaves alone.
    """
    from routing.models import District, RoutingRule

    for model in (RoutingRule, District):
        for row in model.objects.filter(is_active=True):
            row.is_active = False
            row.save()


def _grid_districts(city, training, grid):
    from routing.models import District

    points = [(r["long"], r["lat"]) for r in training if r["lat"] is not None]
    if not points or grid < 1:
        return []
    pad = 1e-4  # so the extreme points fall inside, not on the outer edge
    west, east = min(p[0] for p in points) - pad, max(p[0] for p in points) + pad
    south, north = min(p[1] for p in points) - pad, max(p[1] for p in points) + pad
    width, height = (east - west) / grid, (north - south) / grid
    prefix = "".join(word[0] for word in city.split()).lower()
    districts = []
    for row in range(grid):
        for col in range(grid):
            w, s = west + col * width, south + row * height
            ring = [[w, s], [w + width, s], [w + width, s + height], [w, s + height], [w, s]]
            districts.append(
                District.objects.create(
                    name=f"{city} grid r{row}c{col}",
                    code=f"{prefix}-r{row}c{col}",
                    boundary={"type": "Polygon", "coordinates": [ring]},
                )
            )
    return districts


def _learn_specific_rules(training, categories, routes, districts, departments, min_gain):
    """(category, kind, condition, agency, gain) for multi-agency categories."""
    from routing.models import RoutingRule
    from routing.services import district_for

    records = collections.defaultdict(list)
    for record in training:
        if record["category"] in categories:
            records[record["category"]].append(record)
    learned = []
    for name, rows in sorted(records.items()):
        if len({r["agency"] for r in rows}) < 2:
            continue
        category = categories[name]
        candidates = []
        phrases = {(r["subcategory"] or "").strip().lower() for r in rows if r["subcategory"]}
        for phrase in sorted(phrases):
            if "," in phrase:  # keywords are comma-separated; the phrase would split
                continue
            # Score with the model's own matcher, so a phrase that also matches other
            # subcategories' text is judged on everything it would catch.
            probe = RoutingRule(keywords=phrase)
            caught = [
                r
                for r in rows
                if probe.match(
                    category, None, _text(r), category_ids={category.pk}, district_ids=set()
                )
                is not None
            ]
            candidates.append(("keyword", phrase, caught))
        if districts:
            in_district = collections.defaultdict(list)
            for r in rows:
                district = district_for(r["lat"], r["long"])
                if district is not None:
                    in_district[district.pk].append(r)
            for district in districts:
                candidates.append(("district", district, in_district.get(district.pk, [])))
        for kind, condition, caught in candidates:
            if not caught:
                continue
            counts = collections.Counter(r["agency"] for r in caught)
            agency, n = counts.most_common(1)[0]
            gain = n - counts[routes[name]]
            if agency != routes[name] and gain >= min_gain and agency in departments:
                learned.append((name, kind, condition, agency, gain))
    return learned


def _replay(evaluation, categories, multi):
    from routing.services import decide

    result = dict(
        records=len(evaluation),
        routed=0,
        agree=0,
        multi=0,
        multi_agree=0,
        unseen=0,
        triage=0,
        disagreements=collections.Counter(),
    )
    elapsed, cpu, calls = 0.0, 0.0, 0
    for record in evaluation:
        category = categories.get(record["category"])
        is_multi = record["category"] in multi
        result["multi"] += is_multi
        if category is None:
            result["unseen"] += 1
            continue
        started, cpu_started = time.perf_counter(), time.process_time()
        decision = decide(category, record["lat"], record["long"], _text(record))
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        calls += 1
        if decision.department is None:
            result["triage"] += 1
            result["disagreements"][(record["category"], "triage", record["agency"])] += 1
            continue
        result["routed"] += 1
        got = decision.department.slug.split("-", 1)[1].upper()
        if got == record["agency"]:
            result["agree"] += 1
            result["multi_agree"] += is_multi
        else:
            result["disagreements"][(record["category"], got, record["agency"])] += 1
    result["rate"] = calls / elapsed if elapsed else 0.0
    # SQLite runs in this process, so CPU time covers the queries too; it is the steadier
    # figure when other work shares the machine.
    result["cpu_rate"] = calls / cpu if cpu else 0.0
    return result


def _print_query_cost(categories, evaluation, city):
    """Queries one decide() makes, and how its speed follows the number of active rules."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from requests_app.models import Department
    from routing.models import RoutingRule
    from routing.services import decide

    sample = [r for r in evaluation if r["category"] in categories][:100]
    if not sample:
        return
    with CaptureQueriesContext(connection) as located:
        decide(categories[sample[0]["category"]], 40.0, -74.0, "x")
    with CaptureQueriesContext(connection) as unlocated:
        decide(categories[sample[0]["category"]], None, None, "x")
    extra = 200
    department = Department.objects.filter(is_active=True).first()
    RoutingRule.objects.bulk_create(
        RoutingRule(
            name=f"never {i}", position=1000, keywords="zzzunmatchable", department=department
        )
        for i in range(extra)
    )
    started = time.process_time()
    for record in sample:
        decide(categories[record["category"]], record["lat"], record["long"], _text(record))
    rate = len(sample) / (time.process_time() - started)
    RoutingRule.objects.filter(position=1000).delete()
    print(
        f"{city}: one decide() makes {len(located)} queries with a location, "
        f"{len(unlocated)} without; with {extra} more active rules that never match: "
        f"{rate:.0f} decisions per CPU second"
    )


def _pct(part, whole):
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


if __name__ == "__main__":
    main()
