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
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

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

# scrypt at n=2**15 costs ~32 MiB and ~0.1 s: slow for a guesser, fast for the operator.
DEFAULT_KDF = {"name": "scrypt", "n": 2**15, "r": 8, "p": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class DecryptError(VerificationError):
    """Ciphertext failed authentication: damaged data or the wrong key."""


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
        d = json.loads(data)
        return cls(unb64(d["encrypt"]), unb64(d["mac"]))


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
        if len(sealed) < OVERHEAD:
            raise DecryptError(f"{what} is truncated ({len(sealed)} bytes)")
        mv = memoryview(sealed)
        flag = bytes(mv[NONCE_SIZE : NONCE_SIZE + 1])
        try:
            body = self.aead.decrypt(bytes(mv[:NONCE_SIZE]), mv[NONCE_SIZE + 1 :], aad + flag)
        except InvalidTag:
            raise DecryptError(
                f"{what} failed authentication (damaged or not written with this key)",
                hint="run 'recoverctl verify --read-data' to find every damaged object",
            ) from None
        if flag == _ZSTD:
            return self._decompressor().decompress(body, max_output_size=1 << 30)
        return body

    def seal_json(self, obj: Any, aad: bytes) -> bytes:
        return self.seal(json.dumps(obj, separators=(",", ":")).encode(), aad)

    def open_json(self, sealed: bytes, aad: bytes, what: str) -> Any:
        return parse_document(self.open(sealed, aad, what))


_PROBE = 64 * 1024


def derive(password: str, salt: bytes, params: dict[str, Any]) -> bytes:
    """Given a passphrase, salt and KDF parameters, return a 32-byte wrapping key."""
    if params.get("name") != "scrypt":
        raise VerificationError(f"unsupported key derivation function {params.get('name')!r}")
    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2 + (1 << 20), dklen=32
    )


def wrap_master(master: MasterKey, password: str, kdf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a key-file document holding `master` wrapped by a key derived from `password`."""
    params = dict(kdf or DEFAULT_KDF)
    salt = os.urandom(16)
    wrapping = derive(password, salt, params)
    nonce = os.urandom(NONCE_SIZE)
    data = nonce + AESGCM(wrapping).encrypt(nonce, master.to_json(), b"recoverctl-key")
    return {"kdf": params, "salt": b64(salt), "data": b64(data)}


def unwrap_master(doc: dict[str, Any], password: str) -> MasterKey:
    """Return the master key in a key-file document; raise WrongKeyError for another passphrase."""
    wrapping = derive(password, unb64(doc["salt"]), doc["kdf"])
    data = unb64(doc["data"])
    try:
        plain = AESGCM(wrapping).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], b"recoverctl-key")
    except InvalidTag:
        raise WrongKeyError("wrong passphrase") from None
    return MasterKey.from_json(plain)


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
