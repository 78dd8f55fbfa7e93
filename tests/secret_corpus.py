"""Secret shapes and ordinary log lines, to measure redaction (tests and bench/bench_redaction.py).

Each SECRETS entry is (line, secret): the line as it could appear in a log, an environment
dump, a health-check output or a note, and the part of it that must never be shown.
ORDINARY lines carry no secret: any change to them is a false positive.
"""

from __future__ import annotations

CONFIGURED = "cfg-Sekr1t-value-77"  # passed to Redactor as a configured secret value

_PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"

SECRETS: list[tuple[str, str]] = [
    ("db connect password=hunter2 host=db", "hunter2"),
    ("PASSWORD: hunter5", "hunter5"),
    ('{"password": "hunter6", "user": "app"}', "hunter6"),
    ("passwd='hunter7'", "hunter7"),
    ("mysql --password hunter3 -h db", "hunter3"),
    ("mysql --password=hunter8 -h db", "hunter8"),
    ("app --api-key abcdef123456 --verbose", "abcdef123456"),
    ("pg_dump --token=tok-998877 db", "tok-998877"),
    ("DB_PASS=hunter4", "hunter4"),
    ("REDIS_PASSWORD=hunter9", "hunter9"),
    ("GITHUB_TOKEN=abc123def456", "abc123def456"),
    ("STRIPE_API_KEY=rk_test_51Habc", "rk_test_51Habc"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("export MY_SECRET=s3cr3t-v4lue", "s3cr3t-v4lue"),
    ("  SMTP_PASSWD: 'topsecret1'", "topsecret1"),
    ("client_secret: cs-778899aabb", "cs-778899aabb"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "eyJhbGciOiJIUzI1NiJ9"),
    ("curl -H 'Authorization: Basic dXNlcjpodW50ZXIy' http://x", "dXNlcjpodW50ZXIy"),
    ("auth header: bearer 0123456789abcdefXYZ", "0123456789abcdefXYZ"),
    ("Authorization: token ghx-0123456789abcdef", "ghx-0123456789abcdef"),
    ("connecting to postgres://app:hunter10@db:5432/app", "hunter10"),
    ("redis://:hunter11@cache:6379/0", "hunter11"),
    ("https://x-access-token:ghs_abcdefghijklmnop@github.com/o/r.git", "ghs_abcdefghijklmnop"),
    ("key id AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("session ASIAY34FZKBOKMUTVV7A expired", "ASIAY34FZKBOKMUTVV7A"),
    ("gcp key AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
    ("oauth ya29.a0AfH6SMBx3fD-abcdefghijklmnop", "ya29.a0AfH6SMBx3fD-abcdefghijklmnop"),
    (
        "push with ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    ),
    (
        "fine-grained github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "xoxb-123456789012-1234567890123"),
    ("slack app xapp-1-A0123456789-1234567890123-abcdef0123", "xapp-1-A0123456789-1234567890123"),
    (
        "webhook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("openai sk-proj-abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"),
    ("stripe sk_live_51H8abcdefghijklmnop", "sk_live_51H8abcdefghijklmnop"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "dozjgNryP4J3jVmNHl0w5N",
    ),
    (
        f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----",
        _PEM_BODY,
    ),
    (f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_PEM_BODY}\n(cut)", _PEM_BODY),
    (f'{{"private_key": "-----BEGIN PRIVATE KEY-----\\n{_PEM_BODY}\\n"}}', _PEM_BODY),
    (f"value {CONFIGURED} leaked in a stack trace", CONFIGURED),
    (
        "npm token npm_abcdefghijklmnopqrstuvwxyz0123456789",
        "npm_abcdefghijklmnopqrstuvwxyz0123456789",
    ),
]

ORDINARY: list[str] = [
    "2026-01-02T10:00:00Z INFO request completed in 35 ms status=200 path=/api/users",
    "2026-01-02T10:00:01Z WARN retrying connection to db:5432 (attempt 3/5)",
    "ERROR Traceback (most recent call last):",
    '  File "/app/worker.py", line 42, in handle',
    "KeyError: 'user_id'",
    "GET /healthz 200 0.4ms",
    "Connected to redis://cache:6379/0",
    "Fetching https://example.com/docs/index.html?page=2&sort=asc",
    "tests passed: 128, failed: 0",
    "max_tokens=512 temperature=0.2 model=small",
    "token bucket refilled, 40 tokens available",
    "password reset email sent to user 42",
    "user login failed: invalid password",
    "the key was rotated at 10:00 by the scheduler",
    "monkey patching disabled",
    "keyboard layout: us",
    "cache hit ratio: 0.97",
    "disk /var/lib/docker 91% full",
    "container web exited with code 137 (OOMKilled)",
    "Started process worker pid=4242",
    "SELECT id, name FROM users WHERE id = 7",
    "job invoice-bot run 991 finished in 4.2 s",
    "listening on 127.0.0.1:8080",
    "sha256:3f2a9c0e1b7d4a6e8f0c2b4d6a8e0f1c3b5d7a9e1f3c5b7d9a1e3f5c7b9d1a3e pulled",
    "commit 1914b5f tests: one hand-moved clock",
    "upstream connect error or disconnect/reset before headers",
    "TLS handshake with api.example.com took 120 ms",
    "Basic checks completed",
    "Bearer auth is configured for the ingest socket",
    "secret rotation scheduled for Sunday",
    "--verbose --port 8080 --config /etc/app.toml",
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "HOME=/root",
    "KEYCLOAK_URL=http://keycloak:8080",
    "WARN deprecated flag --legacy-mode",
    "worker-3 heartbeat ok",
    "uuid=6f1c2e0a-8b5d-4c3e-9f7a-1b2c3d4e5f60",
    "2026-01-02 10:00:05,123 - app.tasks - DEBUG - queue depth 17",
    "kernel: eth0: link up, 1000 Mbps, full duplex",
    "HTTP/1.1 401 Unauthorized",
]
