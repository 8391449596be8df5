"""Keys and the blob cipher: keyed BLAKE3 ids, zstd compression, AES-256-GCM, scrypt key wrapping.

A master key is 32 bytes for AES-256-GCM plus 32 bytes for the keyed BLAKE3 that names blobs, so
blob ids reveal nothing about content to someone without the key. Every sealed object is
``nonce(12) || flag(1) || AES-GCM ciphertext || tag(16)`` (flag: 0 raw, 1 zstd, authenticated as
part of the AAD) and the AAD binds it to what it claims to be (a blob
id or an object key), so swapping two objects is detected like a flipped byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recoverctl.errors import VerificationError, WrongKeyError
from recoverctl.repo.documents import parse_document

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE + 1  # nonce, GCM tag, compression flag

_RAW = b"\x00"
_ZSTD = b"\x01"

# scrypt at n=2**15, r=8, p=3: OWASP's password storage cheat sheet lists it as equivalent to
# n=2**17, r=8, p=1 (the p lanes run one after another over the same 32 MiB). It costs 32 MiB
# and ~0.4 s of CPU per derivation, once per process that opens the repository; n=2**17 cost
# 128 MiB, which was the peak memory of every backup (docs/memory.md).
DEFAULT_KDF = {"name": "scrypt", "n": 2**15, "r": 8, "p": 3}

# Bounds on the KDF parameters read from a key file: key files are plaintext and anyone who can
# write to the storage can plant one, so its parameters must not make opening exhaust memory or
# CPU. 128 * n * r bytes of memory, n * r * p units of work (the default is 3 * 2**18 of them).
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
MAX_SCRYPT_MEMORY = 1 << 30
MAX_SCRYPT_WORK = 2**23
# A wrapped master key is nonce || AES-GCM(~100 bytes of JSON) || tag.
_MAX_WRAPPED = 4096


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class DecryptError(VerificationError):
    """Ciphertext failed authentication: damaged data or the wrong key."""


class KeySlotError(VerificationError):
    """A key file that is not a usable key slot (garbage, wrong types, out-of-bounds KDF)."""


@dataclass(frozen=True)
class MasterKey:
    encrypt: bytes
    mac: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))

    def to_json(self) -> bytes:
        return json.dumps({"encrypt": b64(self.encrypt), "mac": b64(self.mac)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MasterKey:
        """Return the key in `data`; raise ValueError, KeyError or TypeError when it is not one."""
        d = json.loads(data)
        key = cls(unb64(d["encrypt"]), unb64(d["mac"]))
        if len(key.encrypt) != 32 or len(key.mac) != 32:
            raise ValueError("a master key has two 32-byte parts")
        return key


class Cipher:
    """Seal and open objects with one master key; thread-safe (the C libraries release the GIL)."""

    def __init__(self, key: MasterKey, compression_level: int = 3):
        self.key = key
        self.aead = AESGCM(key.encrypt)
        self.level = compression_level
        self._zstd_params = zstandard.ZstdCompressionParameters.from_level(compression_level)
        # zstd contexts are not thread-safe, and a fresh one per blob costs more than compressing
        # a small blob (and ~0.5 ms per 1 MiB blob): one set per thread, reused.
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        zc: zstandard.ZstdCompressor | None = getattr(self._local, "zc", None)
        if zc is None:
            zc = self._local.zc = zstandard.ZstdCompressor(compression_params=self._zstd_params)
        return zc

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        zd: zstandard.ZstdDecompressor | None = getattr(self._local, "zd", None)
        if zd is None:
            zd = self._local.zd = zstandard.ZstdDecompressor()
        return zd

    def blob_id(self, plaintext: bytes | memoryview) -> bytes:
        """Given plaintext, return its 32-byte keyed BLAKE3 id."""
        return blake3.blake3(plaintext, key=self.key.mac, max_threads=1).digest()

    def mac(self, data: bytes) -> str:
        return blake3.blake3(data, key=self.key.mac).hexdigest()

    def seal_parts(
        self, plaintext: bytes | memoryview, aad: bytes, compress: bool = True
    ) -> tuple[bytes, bytes]:
        """Return (nonce || flag, ciphertext || tag): the two parts of a sealed object, not joined.

        Kept apart so the hot path never copies a blob just to prepend 13 bytes.
        """
        body: bytes | memoryview = plaintext
        flag = _RAW
        if compress and len(plaintext) > 64 and self._worth_compressing(plaintext):
            packed = self._compressor().compress(plaintext)
            if len(packed) < len(plaintext):
                body, flag = packed, _ZSTD
        nonce = os.urandom(NONCE_SIZE)
        return nonce + flag, self.aead.encrypt(nonce, body, aad + flag)

    def _worth_compressing(self, data: bytes | memoryview) -> bool:
        """Probe a large blob's first 64 KiB at zstd level 1: random or already compressed data is skipped."""
        if len(data) < 4 * _PROBE:
            return True
        prober: zstandard.ZstdCompressor | None = getattr(self._local, "probe", None)
        if prober is None:
            prober = self._local.probe = zstandard.ZstdCompressor(level=1)
        return len(prober.compress(memoryview(data)[:_PROBE])) < _PROBE * 0.97

    def seal(self, plaintext: bytes | memoryview, aad: bytes, compress: bool = True) -> bytes:
        """Given plaintext, return nonce || flag || AES-GCM(zstd-or-raw plaintext, aad || flag)."""
        head, ct = self.seal_parts(plaintext, aad, compress)
        return head + ct

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str = "object") -> bytes:
        """Return the plaintext of a sealed object; raise DecryptError when it does not authenticate."""
        flag, body = self._decrypt(sealed, aad, what)
        if flag == _ZSTD:
            return self._decompressor().decompress(body, max_output_size=1 << 30)
        return body

    def open_to(self, sealed: bytes | memoryview, aad: bytes, out: BinaryIO, what: str = "object") -> None:
        """Write the plaintext of a sealed object to `out`, inflated piece by piece (never whole in
        memory); raise DecryptError, before anything is written, when it does not authenticate."""
        flag, body = self._decrypt(sealed, aad, what)
        if flag == _ZSTD:
            self._decompressor().copy_stream(io.BytesIO(body), out)
        else:
            out.write(body)

    def _decrypt(self, sealed: bytes | memoryview, aad: bytes, what: str) -> tuple[bytes, bytes]:
        """Return (flag, authenticated body) of a sealed object; raise DecryptError."""
        if len(sealed) < OVERHEAD:
            raise DecryptError(f"{what} is truncated ({len(sealed)} bytes)")
        mv = memoryview(sealed)
        flag = bytes(mv[NONCE_SIZE : NONCE_SIZE + 1])
        try:
            body = self.aead.decrypt(bytes(mv[:NONCE_SIZE]), mv[NONCE_SIZE + 1 :], aad + flag)
        except InvalidTag:
            raise DecryptError(
                f"{what} failed authentication (damaged, moved or copied from another name, "
                "or not written with this key)",
                hint="run 'recoverctl verify --read-data' to find every damaged object",
            ) from None
        return flag, body

    def seal_json(self, obj: Any, aad: bytes) -> bytes:
        return self.seal(json.dumps(obj, separators=(",", ":")).encode(), aad)

    def open_json(self, sealed: bytes, aad: bytes, what: str) -> Any:
        return parse_document(self.open(sealed, aad, what))


_PROBE = 64 * 1024


def check_kdf(params: Any) -> dict[str, Any]:
    """Return KDF parameters normalized to {"name", "n", "r", "p"}; raise KeySlotError when they
    are malformed or beyond the bounds (MAX_SCRYPT_*), before any work is done with them."""
    if not isinstance(params, dict) or params.get("name") != "scrypt":
        name = params.get("name") if isinstance(params, dict) else params
        raise KeySlotError(f"unsupported key derivation function {name!r}")
    values = [params.get(k) for k in ("n", "r", "p")]
    n, r, p = (v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0 for v in values)
    if not n or not r or not p:
        raise KeySlotError(f"scrypt parameters must be positive integers, not {values}")
    if n < 2 or n & (n - 1):
        raise KeySlotError(f"scrypt n={n} is not a power of two")
    if n > MAX_SCRYPT_N or r > MAX_SCRYPT_R or p > MAX_SCRYPT_P:
        raise KeySlotError(
            f"scrypt n={n}, r={r}, p={p} exceed the accepted bounds "
            f"(n <= 2^20, r <= {MAX_SCRYPT_R}, p <= {MAX_SCRYPT_P})"
        )
    if 128 * n * r > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        raise KeySlotError(f"scrypt n={n}, r={r}, p={p} would need more than 1 GiB or 8x the default work")
    return {"name": "scrypt", "n": n, "r": r, "p": p}


def derive(password: str, salt: bytes, params: dict[str, Any]) -> bytes:
    """Given a passphrase, salt and KDF parameters, return a 32-byte wrapping key; raise
    KeySlotError for parameters check_kdf refuses."""
    kdf = check_kdf(params)
    n, r, p = kdf["n"], kdf["r"], kdf["p"]
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2 + (1 << 20), dklen=32
    )


@dataclass(frozen=True)
class KeySlot:
    """The parts of a key file that unwrapping uses, checked and normalized."""

    kdf: dict[str, Any]
    salt: bytes
    data: bytes

    @classmethod
    def parse(cls, doc: Any) -> KeySlot:
        """Given a parsed key file, return its slot; raise KeySlotError for anything malformed."""
        if not isinstance(doc, dict):
            raise KeySlotError("not a JSON object")
        kdf = check_kdf(doc.get("kdf"))
        try:
            salt = base64.b64decode(doc["salt"], validate=True)
            data = base64.b64decode(doc["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeySlotError("'salt' and 'data' must be base64 strings") from None
        if not 16 <= len(salt) <= 64 or not OVERHEAD <= len(data) <= _MAX_WRAPPED:
            raise KeySlotError(f"salt ({len(salt)} bytes) or wrapped key ({len(data)} bytes) out of bounds")
        return cls(kdf, salt, data)

    @property
    def id(self) -> str:
        """The slot's name in a format-2 repository: SHA-256 of its canonical form, so a copy
        under another name (or a slot re-encoded to look different) is refused before any
        key derivation."""
        canonical = json.dumps(
            {"kdf": self.kdf, "salt": b64(self.salt), "data": b64(self.data)},
            sort_keys=True,
            separators=(",", ":"),
        )
        return sha256_hex(canonical.encode())

    def unwrap(self, password: str) -> MasterKey:
        """Return the master key; raise WrongKeyError for another passphrase, KeySlotError when
        the slot authenticates but does not hold a master key."""
        wrapping = derive(password, self.salt, self.kdf)
        try:
            plain = AESGCM(wrapping).decrypt(
                self.data[:NONCE_SIZE], self.data[NONCE_SIZE:], b"recoverctl-key"
            )
        except InvalidTag:
            raise WrongKeyError("wrong passphrase") from None
        try:
            return MasterKey.from_json(plain)
        except (ValueError, KeyError, TypeError):
            raise KeySlotError("the wrapped master key is malformed") from None


def wrap_master(master: MasterKey, password: str, kdf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a key-file document holding `master` wrapped by a key derived from `password`."""
    params = check_kdf(dict(kdf or DEFAULT_KDF))
    salt = os.urandom(16)
    wrapping = derive(password, salt, params)
    nonce = os.urandom(NONCE_SIZE)
    data = nonce + AESGCM(wrapping).encrypt(nonce, master.to_json(), b"recoverctl-key")
    return {"kdf": params, "salt": b64(salt), "data": b64(data)}


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
