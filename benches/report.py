#!/usr/bin/env python3
"""Turns benches/run.sh's raw results into markdown tables with ratios and target verdicts.

usage: report.py results.jsonl openssl-speed.txt machine.txt results.md README.md

The best round of each (contestant, key, scenario) is kept: throughput scenarios by the highest
figure, S6 by the lowest memory. README.md's section between the results markers is replaced.
"""

import json
import re
import sys

CONTESTANTS = ["certgate", "nginx", "haproxy", "caddy"]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(path):
    best = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        k = (r["contestant"], r["key"], r["scenario"])
        if r["scenario"] == "job":  # run.sh's same_job check: keep the worst round
            old = best.get(k)
            if old:
                for f in ("identity_headers", "revoked_refused"):
                    r[f] = r[f] and old[f]
            best[k] = r
            continue
        if "error" in r:
            best.setdefault(k, r)
            continue
        if r["scenario"] == "S6":
            score = -r["rss_with_kib"]
        elif r["scenario"] in ("S3", "S4"):
            score = r["load"]["mb_per_s"]
        else:
            score = r["load"]["rps"]
        old = best.get(k)
        if old is None or "error" in old or score > old["_score"]:
            r["_score"] = score
            best[k] = r
    return best


def speed(path):
    text = open(path).read()
    out = {}
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", text)
    if m:
        out["ecdsa_sign"], out["ecdsa_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"256 bits ecdh \(nistp256\)\s+\S+\s+([\d.]+)", text)
    if m:
        out["ecdh"] = float(m.group(1))
    m = re.search(r"253 bits ecdh \(X25519\)\s+\S+\s+([\d.]+)", text)
    if m:
        out["x25519"] = float(m.group(1))
    m = re.search(r"rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", text)
    if m:
        out["rsa_sign"], out["rsa_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"(?mi)^AES-128-GCM\s+(.*)$", text)
    if m:
        cols = m.group(1).split()
        out["aes_gcm_mb"] = float(cols[-1].rstrip("k")) * 1000 / 1e6
    if {"ecdsa_sign", "ecdsa_verify", "ecdh"} <= out.keys():
        # One full mTLS handshake on the server: sign (server key), verify the client's
        # certificate and its CertificateVerify, one ECDH key generation and one derivation.
        ecdh = 2 / out["ecdh"]
        out["bound_ecdsa"] = 1 / (1 / out["ecdsa_sign"] + 2 / out["ecdsa_verify"] + ecdh)
        if "rsa_sign" in out:
            out["bound_rsa"] = 1 / (1 / out["rsa_sign"] + 2 / out["ecdsa_verify"] + ecdh)
    return out


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float) and v >= 100:
        return f"{v:,.0f}{unit}"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}×"


def figure(best, who, key, scenario, field):
    r = best.get((who, key, scenario))
    if r is None or "error" in r:
        return None
    if field in ("proxy_cpu_s",):
        return r.get(field)
    return r["load"].get(field)


def cpu_us_per_request(best, who, key, scenario):
    r = best.get((who, key, scenario))
    if r is None or "error" in r or not r["load"]["requests"]:
        return None
    return r["proxy_cpu_s"] * 1e6 / r["load"]["requests"]


def main(results, speed_path, machine_path, out_md, readme):
    best = load(results)
    sp = speed(speed_path)
    machine = open(machine_path).read().strip().splitlines()
    present = [c for c in CONTESTANTS if any(k[0] == c for k in best)]
    peers = [c for c in present if c != "certgate"]
    lines = []
    w = lines.append
    w("Machine and versions:\n")
    for m in machine:
        w(f"- {m}")
    w("")
    w("Bounds from `openssl speed` on core 0 (the peers' OpenSSL; certgate links its own):\n")
    w("| operation | per second |")
    w("|---|---|")
    for k, label in [
        ("ecdsa_sign", "ECDSA P-256 sign"),
        ("ecdsa_verify", "ECDSA P-256 verify"),
        ("ecdh", "ECDH P-256"),
        ("x25519", "ECDH X25519 (what the handshakes negotiate: the load tool offers X25519, then P-256)"),
        ("rsa_sign", "RSA-2048 sign"),
        ("aes_gcm_mb", "AES-128-GCM, MB/s (16 KiB blocks)"),
        ("bound_ecdsa", "**full mTLS handshake bound, ECDSA server key**"),
        ("bound_rsa", "**full mTLS handshake bound, RSA-2048 server key**"),
    ]:
        if k == "x25519" and k not in sp:  # older runs did not measure it
            continue
        w(f"| {label} | {fmt(sp.get(k))} |")
    w("")
    w("The handshake bound is 1 / (server sign + 2 ECDSA verifies + 2 ECDH operations): what one core")
    w("could do if a handshake cost nothing but its public-key operations.\n")

    jobs = {c: best.get((c, "ecdsa", "job")) for c in present}
    if any(jobs.values()):
        def yn(c, f):
            j = jobs.get(c)
            return "—" if not j else ("yes" if j[f] else "**no**")

        w("**Same job?** Checked by `run.sh` on every run: what the upstream received for a request")
        w("carrying forged identity headers, and whether a revoked client certificate was refused.\n")
        w("| | " + " | ".join(present) + " |")
        w("|---" * (len(present) + 1) + "|")
        w("| identity headers set, forged ones replaced | " + " | ".join(yn(c, "identity_headers") for c in present) + " |")
        w("| revoked client certificate refused (CRL) | " + " | ".join(yn(c, "revoked_refused") for c in present) + " |")
        w("")
    notes = []
    if "caddy" in present:
        notes.append("Caddy 2.6 cannot load a CRL, so it does less work per handshake; it resumes sessions with "
                     "tickets only (Go has no session-ID cache) and picks AES-128-GCM where the others pick "
                     "AES-256-GCM.")
    if "nginx" in present:
        notes.append("NGINX finishes the handshake with a client that sends no certificate (or a revoked one) "
                     "and answers 400; the others end the handshake.")
    if notes:
        w("Differences between the peers: " + " ".join(notes) + "\n")

    def table(title, scenario, key, field, unit, extra_cpu=True, direct=True):
        w(f"**{title}**\n")
        head = "| | " + " | ".join(present + (["direct"] if direct else [])) + " |"
        w(head)
        w("|---" * (len(present) + 1 + (1 if direct else 0)) + "|")
        vals = [figure(best, c, key, scenario, field) for c in present]
        if direct:
            vals.append(figure(best, "direct", "-", scenario, field))
        w(f"| {unit} | " + " | ".join(fmt(v) for v in vals) + " |")
        if field == "rps":
            for pf in ("p50_ms", "p99_ms"):
                pv = [figure(best, c, key, scenario, pf) for c in present]
                if direct:
                    pv.append(figure(best, "direct", "-", scenario, pf))
                w(f"| {pf.replace('_ms', '')} ms | " + " | ".join(fmt(v) for v in pv) + " |")
        if extra_cpu:
            cv = [cpu_us_per_request(best, c, key, scenario) for c in present]
            if direct:
                cv.append(None)
            w("| proxy CPU µs per request | " + " | ".join(fmt(v) for v in cv) + " |")
        else:
            cv = [figure(best, c, key, scenario, "proxy_cpu_s") for c in present]
            if direct:
                cv.append(None)
            w("| proxy CPU seconds | " + " | ".join(fmt(v) for v in cv) + " |")
        cg = figure(best, "certgate", key, scenario, field)
        w("| certgate ÷ peer | " + " | ".join(
            "" if c == "certgate" else ratio(cg, figure(best, c, key, scenario, field)) for c in present
        ) + (" |  |" if direct else " |"))
        w("")

    table("S1: keep-alive GET of 64 bytes, 32 connections", "S1", "ecdsa", "rps", "req/s")
    table("S2: a new connection per request, full mTLS handshake, ECDSA P-256 server key", "S2", "ecdsa", "rps", "handshakes/s")
    table("S2: the same with an RSA-2048 server key", "S2", "rsa", "rps", "handshakes/s", direct=False)
    table("S2r: a new connection per request, resuming the previous session", "S2r", "ecdsa", "rps", "handshakes/s", direct=False)
    resumed = [
        (c, figure(best, c, "ecdsa", "S2r", "resumed"), figure(best, c, "ecdsa", "S2r", "requests"))
        for c in present
    ]
    w("Resumed in S2r: " + ", ".join(
        f"{c} {r or 0}/{n or 0}" + (f" ({(r or 0) / n:.0%})" if n else "") for c, r, n in resumed) + "\n")
    table("S5: HTTP/2, 32 concurrent streams on one connection", "S5", "ecdsa", "rps", "req/s", direct=False)
    table("S3: 1 GiB download", "S3", "ecdsa", "mb_per_s", "MB/s", extra_cpu=False)
    table("S4: 1 GiB upload", "S4", "ecdsa", "mb_per_s", "MB/s", extra_cpu=False)

    w("**S6: memory (RSS of all the proxy's processes)**\n")
    w("| | " + " | ".join(present) + " |")
    w("|---" * (len(present) + 1) + "|")
    s6 = {c: best.get((c, "ecdsa", "S6")) for c in present}

    def s6v(c, f):
        r = s6.get(c)
        if not r or "error" in r:
            return None
        if f == "idle":
            return r["rss_idle_kib"] / 1024
        if f == "with":
            return r["rss_with_kib"] / 1024
        held = r.get("held") or 0
        return (r["rss_with_kib"] - r["rss_idle_kib"]) / held if held else None

    w("| idle MiB | " + " | ".join(fmt(s6v(c, "idle")) for c in present) + " |")
    held = next((s6[c].get("held") for c in present if s6.get(c) and "held" in s6[c]), 1000)
    w(f"| with {held} idle mTLS connections, MiB | " + " | ".join(fmt(s6v(c, "with")) for c in present) + " |")
    w("| KiB per idle connection | " + " | ".join(fmt(s6v(c, "per")) for c in present) + " |")
    w("")

    # Targets
    def get(c, k, s, f):
        return figure(best, c, k, s, f)

    rows = []
    peers = [c for c in present if c != "certgate"]

    def best_peer(s, f):  # the peer with the highest figure f in scenario s, of NGINX and HAProxy unless told
        cands = [(get(c, "ecdsa", s, f), c) for c in peers if c in ("nginx", "haproxy")]
        cands = [x for x in cands if x[0] is not None]
        return max(cands) if cands else (None, None)

    c1, cp99 = get("certgate", "ecdsa", "S1", "rps"), get("certgate", "ecdsa", "S1", "p99_ms")
    p1, who1 = best_peer("S1", "rps")
    pp99 = get(who1, "ecdsa", "S1", "p99_ms") if who1 else None
    rows.append((f"S1 ≥ 1.0× the better of NGINX and HAProxy ({who1}) req/s", ratio(c1, p1), c1 and p1 and c1 >= p1))
    rows.append((f"S1 p99 ≤ {who1}'s p99", f"{fmt(cp99)} vs {fmt(pp99)} ms", cp99 is not None and pp99 is not None and cp99 <= pp99))
    c2, n2 = get("certgate", "ecdsa", "S2", "rps"), get("nginx", "ecdsa", "S2", "rps")
    rows.append(("S2 (ecdsa) ≥ 1.8× NGINX", ratio(c2, n2), c2 and n2 and c2 >= 1.8 * n2))
    c2r, n2r = get("certgate", "rsa", "S2", "rps"), get("nginx", "rsa", "S2", "rps")
    rows.append(("S2 (rsa) ≥ 1.0× NGINX", ratio(c2r, n2r), c2r and n2r and c2r >= n2r))
    for s, name in (("S3", "download"), ("S4", "upload")):
        c, cc = get("certgate", "ecdsa", s, "mb_per_s"), get("certgate", "ecdsa", s, "proxy_cpu_s")
        cands = [(get(p, "ecdsa", s, "mb_per_s"), p) for p in peers]
        cands = [x for x in cands if x[0] is not None]
        pb, who = max(cands) if cands else (None, None)
        pc = get(who, "ecdsa", s, "proxy_cpu_s") if who else None
        rows.append((f"{s} ({name}) ≥ best peer's MB/s ({who})", ratio(c, pb), c and pb and c >= pb))
        rows.append((f"{s} ({name}) proxy CPU ≤ {who}'s", f"{fmt(cc)} vs {fmt(pc)} s", cc is not None and pc is not None and cc <= pc))
    c5, n5 = get("certgate", "ecdsa", "S5", "rps"), get("nginx", "ecdsa", "S5", "rps")
    rows.append(("S5 (HTTP/2) ≥ 1.0× NGINX", ratio(c5, n5), c5 and n5 and c5 >= n5))
    idle, per = s6v("certgate", "idle"), s6v("certgate", "per")
    rows.append(("S6 idle RSS ≤ 20 MiB", f"{fmt(idle)} MiB", idle is not None and idle <= 20))
    rows.append(("S6 ≤ 24 KiB per idle connection", f"{fmt(per)} KiB", per is not None and per <= 24))
    w("**Targets**\n")
    w("| target | measured | |")
    w("|---|---|---|")
    for name, value, ok in rows:
        w(f"| {name} | {value} | {'PASS' if ok else 'MISS'} |")
    w("")
    errors = [r for r in best.values() if "error" in r]
    if errors:
        w("Failed cells: " + "; ".join(f"{r['contestant']}/{r['key']}/{r['scenario']}: {r['error']}" for r in errors) + "\n")

    body = "\n".join(lines)
    with open(out_md, "w") as f:
        f.write("# Latest benchmark results\n\nWritten by `benches/run.sh` (see `benches/README.md`).\n\n" + body + "\n")
    text = open(readme).read()
    section = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + section + "\n"
    with open(readme, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(*sys.argv[1:6])
