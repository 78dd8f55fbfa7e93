"""Keys for the audit chain's HMACs, kept outside the store.

OPSMEDIC_AUDIT__KEYS="k2:secret2,k1:secret1" (the first signs new entries, all verify), or
else a key file `audit.key` under the data dir, created with one random key (`k1`) on first
use, like the approval key. Rotate by putting a new `id:secret` first and keeping the old.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from mcp_server.errors import ConfigError

KEY_FILE = "audit.key"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class AuditKeys:
    current_id: str
    keys: dict[str, bytes]

    def mac(self, key_id: str, message: str) -> str | None:
        """HMAC-SHA256 hex of `message` under key `key_id`, None if the id is unknown."""
        key = self.keys.get(key_id)
        if key is None:
            return None
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def parse(cls, text: str, where: str) -> AuditKeys:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for part in re.split(r"[,\n]", text):
            part = part.strip()
            if not part:
                continue
            key_id, sep, secret = part.partition(":")
            if not sep or not _ID.match(key_id) or len(secret) < 16:
                raise ConfigError(
                    f"{where}: each key is ID:SECRET (ID letters/digits, SECRET >= 16 chars), "
                    "e.g. k2:$(openssl rand -hex 32)"
                )
            keys[key_id] = secret.encode()
            order.append(key_id)
        if not order:
            raise ConfigError(f"{where} holds no key; write ID:SECRET, e.g. k1:<64 hex digits>")
        return cls(order[0], keys)


def load_audit_keys(configured: str | None, data_dir: Path) -> AuditKeys:
    """The configured keys, else the key file under data_dir (created when missing)."""
    if configured:
        return AuditKeys.parse(configured, "OPSMEDIC_AUDIT__KEYS")
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"k1:{secrets.token_hex(32)}\n")
        path.chmod(0o600)
    return AuditKeys.parse(path.read_text(), str(path))
