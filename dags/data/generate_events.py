"""Generates the sample events of the example DAGs (deterministic): a developer-tools
product with signups, API calls, feature-flag exposures and upgrades. The onboarding
experiment has a real effect (treatment upgrades more often)."""
import json, random

random.seed(7)
out = []
n = 0
def emit(ev, user, ts, props, kind="track"):
    global n
    n += 1
    out.append({"message_id": f"evt-{n:06d}", "type": kind, "event": ev, "user_id": user,
                "timestamp": ts, "sent_at": ts, "received_at": ts, "properties": props,
                "context": {"library": {"name": "analytics.js", "version": "4.1.0"}}})
for u in range(600):
    user = f"user-{u:04d}"
    day = 1 + u % 28
    hh = 8 + u % 10
    t0 = f"2026-02-{day:02d}T{hh:02d}:{u % 60:02d}:00Z"
    emit("signup", user, t0, {"plan": "free", "source": random.choice(["ads", "docs", "referral"])})
    variant = "treatment" if u % 2 else "control"
    emit("$exposure", user, t0.replace(":00Z", ":30Z"), {"flag": "new_onboarding", "variant": variant})
    for k in range(random.randint(0, 4)):
        emit("api_call", user, f"2026-02-{day:02d}T{min(hh + 1 + k, 23):02d}:05:00Z", {"endpoint": random.choice(["/v1/runs", "/v1/dags", "/v1/logs"]), "ms": random.randint(20, 900)})
    if random.random() < (0.17 if variant == "treatment" else 0.08):
        emit("upgraded", user, f"2026-02-{day:02d}T{min(hh + 6, 23):02d}:00:00Z", {"plan": "team", "mrr": 49})
with open("events/product_events.jsonl", "w") as f:
    for e in out:
        f.write(json.dumps(e) + "\n")
print(len(out), "events")
