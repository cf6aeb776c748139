"""Crypto throughput: PBKDF2, AES-256-GCM and Ed25519, inline, in threads, in the process pool;
and a passkey's assertion check (ES256 through py_webauthn), the possession factor's cost,
against the user's key and against the stand-in key a decoy's assertion meets.

    python -m benchmarks.crypto [--seconds S] [--iterations N] [--json]

The baseline is measured in the same run: one core's PBKDF2-HMAC-SHA256 rate (cryptography,
inline), times the number of cores, is "the machine's limit"; every other figure is reported as
a ratio to it. trio-parallel's pool is what the server uses for derivations.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import secrets
import time
from collections.abc import Callable
from typing import Any

import trio
import trio_parallel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.authenticator import SoftAuthenticator
from zeropay_proto.crypto import derive_kek
from zeropay_proto.passkeys import (
    STAND_IN_KEY,
    LinkedData,
    Passkey,
    RelyingParty,
    assertion_options,
    check_assertion,
)

SALT = b"s" * 16
MATERIAL = secrets.token_bytes(3 * 33)


def pbkdf2_cryptography(iterations: int) -> bytes:
    return derive_kek(MATERIAL, SALT, iterations)


def pbkdf2_hashlib(iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", MATERIAL, SALT, iterations, 32)


def rate(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``fn`` on this thread, over about ``seconds``."""
    fn()  # warm up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def threaded_rate(fn: Callable[[], Any], workers: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds

    def loop() -> int:
        n = 0
        while time.perf_counter() < deadline:
            fn()
            n += 1
        return n

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(lambda _: loop(), range(workers)))
    return total / (time.perf_counter() - start)


async def _pool_rate(iterations: int, workers: int, seconds: float) -> float:
    limiter = trio.CapacityLimiter(workers)
    async with trio_parallel.open_worker_context() as ctx:
        # Start the workers before timing (about 90 ms each, docs/stack.md).
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(ctx.run_sync, pbkdf2_cryptography, 1)
        done = 0
        start = trio.current_time()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal done
            while trio.current_time() < deadline:
                await ctx.run_sync(pbkdf2_cryptography, iterations, limiter=limiter)
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(workers * 2):  # keep the pool's queue non-empty
                nursery.start_soon(worker)
        return done / (trio.current_time() - start)


def passkey_rates(seconds: float) -> dict[str, float]:
    """Checks per second of one assertion (ES256): the user's passkey, and a decoy's (an
    unknown credential, checked against the stand-in key); and request options built."""
    rp = RelyingParty(rp_id="localhost", name="bench", origins=("http://localhost:8080",))
    device = SoftAuthenticator(credential_id=secrets.token_bytes(16))
    passkey = Passkey(
        credential_id=device.credential_id,
        public_key=device.cose_key(),
        sign_count=0,
        created_at_ms=0,
    )
    linked = LinkedData(session_id="s", amount=None, currency="EUR", payee="p", attempt=1)
    response = device.sign(rp.rp_id, rp.origins[0], linked.challenge())
    assert passkey.public_key != STAND_IN_KEY
    return {
        "assertion_check_per_s": rate(
            lambda: check_assertion(rp, response, linked=linked, passkeys=[passkey]), seconds
        ),
        "decoy_check_per_s": rate(
            lambda: check_assertion(rp, response, linked=linked, passkeys=[]), seconds
        ),
        "request_options_per_s": rate(
            lambda: assertion_options(rp, linked, [passkey.credential_id]), seconds
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.crypto",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (3)")
    parser.add_argument("--iterations", type=int, default=100_000, help="PBKDF2 iterations")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    n, s = args.iterations, args.seconds
    single = rate(lambda: pbkdf2_cryptography(n), s)
    limit = single * cores
    key, nonce, payload = AESGCM(secrets.token_bytes(32)), b"n" * 12, secrets.token_bytes(600)
    sealed = key.encrypt(nonce, payload, b"aad")
    signer = Ed25519PrivateKey.generate()
    results: dict[str, Any] = {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "iterations": n,
        "pbkdf2_single_core_per_s": single,
        "machine_limit_per_s": limit,
        "pbkdf2": {
            "cryptography_inline": single,
            "hashlib_inline": rate(lambda: pbkdf2_hashlib(n), s),
            "cryptography_threads": threaded_rate(lambda: pbkdf2_cryptography(n), cores, s),
            "hashlib_threads": threaded_rate(lambda: pbkdf2_hashlib(n), cores, s),
            "cryptography_trio_parallel": trio.run(_pool_rate, n, cores, s),
        },
        "aes_gcm_600B": {
            "seal_per_s": rate(lambda: key.encrypt(nonce, payload, b"aad"), s / 3),
            "open_per_s": rate(lambda: key.decrypt(nonce, sealed, b"aad"), s / 3),
        },
        "ed25519_sign_per_s": rate(lambda: signer.sign(payload), s / 3),
        "passkey": passkey_rates(s / 3),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return results
    print(f"machine: {cores} cores, Python {results['machine']['python']}")
    print(
        f"baseline: one core, cryptography PBKDF2-HMAC-SHA256 x{n}: {single:8.1f}/s "
        f"({1000 / single:.2f} ms each); machine limit = {cores} x {single:.1f} = {limit:.1f}/s"
    )
    print(f"{'PBKDF2 x' + str(n):34} {'per s':>9} {'x limit':>8}")
    for name, value in results["pbkdf2"].items():
        print(f"  {name:32} {value:9.1f} {value / limit:8.2f}")
    print(
        f"AES-256-GCM 600 B: seal {results['aes_gcm_600B']['seal_per_s']:,.0f}/s, "
        f"open {results['aes_gcm_600B']['open_per_s']:,.0f}/s"
    )
    print(f"Ed25519 sign: {results['ed25519_sign_per_s']:,.0f}/s")
    passkey = results["passkey"]
    print(
        "passkey assertion check (ES256, py_webauthn): "
        f"{passkey['assertion_check_per_s']:,.0f}/s "
        f"({1e6 / passkey['assertion_check_per_s']:.0f} us each); a decoy's "
        f"{1e6 / passkey['decoy_check_per_s']:.0f} us; request options "
        f"{1e6 / passkey['request_options_per_s']:.0f} us"
    )
    return results


if __name__ == "__main__":
    main()
