#!/usr/bin/env python3
"""Reads vmtest's serial logs (one per kernel, vmtest/run.sh) and writes the kernel x test
matrix: table.md (Markdown), results.tsv and results.json in the same directory, prints the
table and ends with "N passed, N failed, N skipped". Exit status 1 if anything failed.

    vmtest/report.py DIR

A log holds "VMTEST begin NAME" ... "VMTEST end NAME rc=N seconds=S" around each test binary's
cmocka output; a case is "[ RUN      ] case" followed by "[       OK ] case", "[  FAILED  ] case"
or "[  SKIPPED ] case". A case that started and never ended, a binary that never ended (VM
timeout, crash) or exited non-zero with no failed case, all count as failures. A line
"skip: REASON" inside a case is the reason it was skipped."""
import json
import os
import re
import sys

RESULT = re.compile(r"^\[ *(OK|FAILED|SKIPPED|ERROR) *\] (\S+)\s*$")
RUN = re.compile(r"^\[ RUN +\] (\S+)\s*$")


def parse(path):
    k = {"kernel": None, "done": False, "host": "", "plan": [], "modules": {}, "tests": {}}
    cur = None  # the binary's dict
    case = None  # (name, [detail lines])
    for raw in open(path, errors="replace"):
        line = raw.rstrip("\r\n")
        # the kernel may print on the console in the middle of a line: find our markers anyway
        i = line.find("VMTEST ")
        if i >= 0:
            words = line[i:].split()
            if words[1] == "kernel":
                k["kernel"] = words[2]
            elif words[1] == "plan":
                k["plan"] = words[2:]
            elif words[1] == "module":
                k["modules"][words[2]] = " ".join(words[3:])
            elif words[1] == "begin":
                # a name may run several times (one splice case per process): one row group
                cur = k["tests"].setdefault(words[2], {"rc": 0, "seconds": 0, "cases": {},
                                                       "last": ""})
                cur["rc_before"], cur["rc"] = cur["rc"], None
                case = None
            elif words[1] == "end" and cur is not None:
                kv = dict(w.split("=", 1) for w in words[3:] if "=" in w)
                rc = int(kv.get("rc", "-1"))
                cur["rc"] = cur["rc_before"] if cur["rc_before"] else rc
                cur["seconds"] = (cur["seconds"] or 0) + int(kv.get("seconds", "0"))
                if case:
                    cur["cases"][case[0]] = {"result": "fail", "reason": "no result: killed "
                                             "by the timeout or crashed (rc=%d)" % cur["rc"]}
                cur, case = None, None
            elif words[1] == "done":
                k["done"] = True
            elif words[1] == "host":
                k["host"] = " ".join(words[2:])
            continue
        if cur is None:
            continue
        if line.strip():
            cur["last"] = line.strip()[:200]
        m = RUN.match(line)
        if m:
            case = (m.group(1), [])
            continue
        m = RESULT.match(line)
        if m and case and m.group(2) == case[0]:
            res = {"OK": "pass", "FAILED": "fail", "SKIPPED": "skip", "ERROR": "fail"}[m.group(1)]
            reason = ""
            skips = [d[len("skip: "):] for d in case[1] if d.startswith("skip: ")]
            if res == "skip":
                reason = skips[-1] if skips else "skipped (no reason printed)"
            elif res == "fail":
                # cmocka's assertion message if there is one, else the last line printed
                errs = [d.split("---", 1)[1].strip() for d in case[1]
                        if d.startswith(("[  ERROR   ] ---", "[   LINE   ] ---"))]
                details = [d for d in case[1] if d.strip() and not d.startswith("[")]
                reason = ("; ".join(errs) if errs else details[-1].strip() if details
                          else "")[:200]
            cur["cases"][case[0]] = {"result": res, "reason": reason}
            case = None
            continue
        if m and m.group(2) == "GROUP" or line.startswith("[  FAILED  ] GROUP"):
            cur["cases"]["(group setup)"] = {"result": "fail", "reason": "group setup failed"}
            continue
        if case:
            case[1].append(line)
    if cur is not None and case:
        cur["cases"][case[0]] = {"result": "fail", "reason": "no result: the VM stopped in "
                                 "this case (%s)" % (k["host"] or "no host line")}
    for name in k["plan"]:
        if name not in k["tests"]:
            k["tests"][name] = {"rc": None, "seconds": None, "last": "", "cases": {"(run)": {
                "result": "fail", "reason": "never started: the VM stopped before it (%s)"
                % (k["host"] or "no host line")}}}
    # a binary whose run ended badly with no failed case still fails once
    for name, t in k["tests"].items():
        failed = any(c["result"] == "fail" for c in t["cases"].values())
        if t["rc"] is None and "(run)" not in t["cases"]:
            t["cases"]["(run)"] = {"result": "fail", "reason": "never finished: the VM timed "
                                   "out or crashed (%s)" % (k["host"] or "no host line")}
        elif t["rc"] != 0 and not failed:
            t["cases"]["(run)"] = {"result": "fail", "reason": "exit status %d: %s"
                                   % (t["rc"], t["last"])}
        elif not t["cases"]:
            # not a cmocka binary (kernel_probe): its exit status is its verdict
            t["cases"]["(run)"] = {"result": "pass", "reason": ""}
    return k


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    kernels, unavailable = [], []
    for f in sorted(os.listdir(out)):
        p = os.path.join(out, f)
        if f.endswith(".log"):
            k = parse(p)
            k["kernel"] = k["kernel"] or f[:-4]
            if not k["tests"]:
                k["tests"]["(boot)"] = {"rc": None, "seconds": None, "cases": {"(boot)": {
                    "result": "fail", "reason": "no test ran: the kernel did not boot to /init "
                    "(%s)" % (k["host"] or "no host line")}}}
            kernels.append(k)
        elif f.endswith(".unavailable"):
            lines = open(p).read().splitlines()
            spec, _, why = lines[0].partition("\t")
            unavailable.append({"kernel": spec, "reason": why,
                                "required": "required" in lines[1:]})

    rows = []  # (binary, case) in first-seen order
    for k in kernels:
        for b, t in k["tests"].items():
            for c in t["cases"]:
                if (b, c) not in rows:
                    rows.append((b, c))
        for m, st in k["modules"].items():
            if ("modules", m) not in rows:
                rows.append(("modules", m))

    counts = {"pass": 0, "fail": 0, "skip": 0}
    tsv = ["kernel\ttest\tcase\tresult\treason"]
    notes = []
    mark = {"pass": "pass", "fail": "**FAIL**", "skip": "skip"}
    md = ["| test | case | " + " | ".join(k["kernel"] for k in kernels) + " |",
          "|---|---|" + "---|" * len(kernels)]
    for b, c in rows:
        cells = []
        for k in kernels:
            if b == "modules":
                st = k["modules"].get(c)
                r = None if st is None else ("pass" if st == "ok" else "fail")
                reason = "" if st in (None, "ok") else st
            else:
                e = k["tests"].get(b, {}).get("cases", {}).get(c)
                r, reason = (e["result"], e["reason"]) if e else (None, "")
            if r is None:
                cells.append("-")
                continue
            counts[r] += 1
            tsv.append("\t".join([k["kernel"], b, c, r, reason.replace("\t", " ")]))
            cell = mark[r]
            if reason and r != "pass":
                if reason not in notes:
                    notes.append(reason)
                cell += " [%d]" % (notes.index(reason) + 1)
            cells.append(cell)
        md.append("| %s | %s | %s |" % (b, c, " | ".join(cells)))
    md.append("")
    for i, n in enumerate(notes):
        md.append("[%d] %s  " % (i + 1, n))
    for k in kernels:
        secs = " ".join("%s %ss" % (b, t["seconds"]) for b, t in k["tests"].items()
                        if t["seconds"] is not None)
        md.append("%s: %s; %s  " % (k["kernel"], secs, k["host"]))
    for u in unavailable:
        md.append("%s: not tested: %s  " % (u["kernel"], u["reason"]))
        if u["required"]:
            counts["fail"] += 1
            tsv.append("\t".join([u["kernel"], "(fetch)", "(fetch)", "fail", u["reason"]]))
    table = "\n".join(md) + "\n"
    open(os.path.join(out, "table.md"), "w").write(table)
    open(os.path.join(out, "results.tsv"), "w").write("\n".join(tsv) + "\n")
    json.dump({"kernels": kernels, "unavailable": unavailable, "counts": counts},
              open(os.path.join(out, "results.json"), "w"), indent=1)
    print(table)
    print("results: %s/table.md, results.tsv, results.json" % out)
    print("%d passed, %d failed, %d skipped" % (counts["pass"], counts["fail"], counts["skip"]))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
