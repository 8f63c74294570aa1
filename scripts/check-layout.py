#!/usr/bin/python3
"""Checks the source layout's dependency rules (engine/README.md):

1. engine/ subsystems include only their own folder and the folders below
   them, in the order of ENGINE_ORDER (lowest first). An include must name
   its folder ("nn/layers.h"), so every edge is visible to this check.
   GENERATED folders ("onnx/": protoc-c's code for onnx.proto, made under
   BUILD/gen at build time) sit at the very bottom: anything may include
   them, they have no sources under engine/, and their objects (BUILD/obj/
   engine/onnx/) may use nothing of the engine.
2. server/, cli/, engine/ and tests/ never include from server/ or cli/
   across the boundary: nothing in engine/ includes a server or cli header.
3. No dependency circle between the object files of server/, of cli/, or of
   engine/: an edge A -> B is A using a symbol that B defines (read with nm
   from the build, so a header shared by several files hides nothing), and
   engine objects use symbols of their own subsystem or lower ones only.

Prints every violation and exits 1 if there is one.
Usage: scripts/check-layout.py BUILD_DIR   (run from the repository root)"""
import os
import re
import subprocess
import sys

# Generated at build time (the Makefile writes them under BUILD/gen), lowest
# first, below every hand-written subsystem.
GENERATED = ["onnx"]
ENGINE_ORDER = GENERATED + ["core", "quant", "nn", "data", "graph", "deploy", "train"]
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)

if len(sys.argv) != 2:
    sys.exit(__doc__)
obj_root = os.path.join(sys.argv[1], "obj")
errors = []


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def sources(folder):
    for dirpath, _, names in os.walk(folder):
        for n in sorted(names):
            if n.endswith((".c", ".h")):
                yield os.path.join(dirpath, n)


# 1 and 2: engine/
rank = {name: i for i, name in enumerate(ENGINE_ORDER)}
for path in sorted(sources("engine")):
    parts = path.split(os.sep)
    if len(parts) != 3:
        errors.append("%s: engine sources live in a subsystem folder (engine/NAME/file)" % path)
        continue
    own = parts[1]
    if own in GENERATED:
        errors.append("%s: engine/%s/ is generated at build time (BUILD/gen/%s), not a source folder"
                      % (path, own, own))
        continue
    if own not in rank:
        errors.append("%s: engine/%s is not in the subsystem order %s (scripts/check-layout.py)"
                      % (path, own, ENGINE_ORDER))
        continue
    for inc in includes(path):
        head = inc.split("/")[0]
        if "/" not in inc or head not in rank:
            errors.append("%s: includes \"%s\": engine includes name a subsystem folder (%s)"
                          % (path, inc, ", ".join(ENGINE_ORDER)))
        elif rank[head] > rank[own]:
            errors.append("%s: includes \"%s\": %s/ is above %s/ (order, lowest first: %s)"
                          % (path, inc, head, own, " < ".join(ENGINE_ORDER)))


# 3: symbol edges between object files
def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], capture_output=True, text=True,
                         check=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if l.strip()}
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True, check=True).stdout
    used = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, used


def object_graph(folder):
    """{unit: set of units it uses}, units named by source path without .o."""
    base = os.path.join(obj_root, folder)
    objs = sorted(os.path.join(d, n) for d, _, ns in os.walk(base) for n in ns
                  if n.endswith(".o"))
    if not objs:
        errors.append("no objects under %s: build first" % base)
        return {}
    owner, uses = {}, {}
    for o in objs:
        unit = os.path.relpath(o, obj_root)[:-2]
        defined, used = symbols(o)
        uses[unit] = used
        for sym in defined:
            owner[sym] = unit
    return {u: {owner[s] for s in used if s in owner and owner[s] != u}
            for u, used in uses.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = visit(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            c = visit(u)
            if c:
                return c
    return None


for folder in ("server", "cli", "engine"):
    graph = object_graph(folder)
    cycle = find_cycle(graph) if graph else None
    if cycle:
        errors.append("%s/: dependency circle %s" % (folder, " -> ".join(cycle)))
    if folder == "engine":
        for u, vs in sorted(graph.items()):
            for v in sorted(vs):
                if rank.get(v.split("/")[1], -1) > rank.get(u.split("/")[1], -1):
                    errors.append("%s uses symbols of %s, a higher subsystem" % (u, v))
    for path in sorted(sources(folder)):
        other = "cli" if folder == "server" else "server"
        for inc in includes(path):
            if folder != "engine" and inc.startswith(other + "/"):
                errors.append("%s: includes \"%s\" from %s/" % (path, inc, other))

for path in sorted(sources("engine")):
    for inc in includes(path):
        if inc.startswith(("server/", "cli/")):
            errors.append("%s: the engine includes \"%s\"" % (path, inc))

for e in errors:
    print("layout: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print("layout: engine subsystems %s (generated: %s); no dependency circle in engine/, "
      "server/ or cli/" % (" < ".join(ENGINE_ORDER), ", ".join(GENERATED)))
