"""Generates the sample survey export of the example survey DAG (deterministic): 12 weeks
of NPS responses to a developer-tools product, in the shape `survey_sync` reads from a
CSV export (token, submitted_at, one column per question, the user_id hidden field).
The score improves after an onboarding change in week 7, so the NPS trend moves."""
import csv, random

random.seed(11)
reasons = ["Speed", "Reliability", "Docs", "Price", "UI"]
rows = []
for week in range(12):
    n = random.randint(25, 45)
    for k in range(n):
        day = 7 * week + random.randint(0, 6)
        month, dom = (9, 1 + day) if day < 30 else ((10, day - 29) if day < 61 else (11, day - 60))
        ts = f"2026-{month:02d}-{dom:02d} {random.randint(8, 20):02d}:{random.randint(0, 59):02d}:{random.randint(0, 59):02d}"
        better = week >= 6
        r = random.random()
        if r < (0.48 if better else 0.36):
            score = random.choice([9, 10])
        elif r < (0.78 if better else 0.66):
            score = random.choice([7, 8])
        else:
            score = random.randint(0 if not better else 2, 6)
        csat = "" if random.random() < 0.4 else str(min(5, max(1, round(score / 2.2 + random.uniform(-0.8, 0.8)))))
        comment = random.choice(["", "", "", "love the CLI", "grid view is great", "flaky retries, fixed now?", "docs could be clearer, e.g. on pools"])
        rows.append([f"nps-{week:02d}-{k:03d}", ts, score, random.choice(reasons), comment, csat, f"user-{random.randint(0, 599):04d}"])
rows.sort(key=lambda r: r[1])
with open("surveys/nps_export.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["token", "submitted_at", "nps", "reason", "comment", "support_csat", "user_id"])
    w.writerows(rows)
print(len(rows), "responses")
