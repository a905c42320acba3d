"""The gateway's Rego policies on OPA's own engine (OPA 1.20.2 through opa-golib-python-bindings,
installed into .cache/venv-opa by scripts/setup-interop). Driven by tests/it/opa.rs.

    opa_eval.py tests  POLICY_DIR DATA_JSON
        Loads every *.rego of POLICY_DIR (tests included) and the data document, then evaluates
        each rule named test_* of each *_test.rego, as `opa test` does. One JSON line per test:
        {"file", "name", "passed", "failure"}, then one summary line {"package_tests": {...}}
        giving, per test package, the test_* keys of the package document as OPA evaluates it
        (every rule that is defined, found by OPA, not by reading the text).

    opa_eval.py decide POLICY_DIR DATA_JSON ENTRYPOINT
        Loads the policies (no tests) and the data, then reads input documents as JSON lines on
        stdin and writes, per line, the entrypoint's value under OPA: {"value": ...},
        {"undefined": true} or {"error": "..."}.

The data comes as JSON converted by the gateway's own YAML reader, so both engines see the same
document.
"""

import json
import pathlib
import re
import sys

from opa_bindings import OpaEngine, OpaError, OpaUndefinedError

TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)", re.MULTILINE)
PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.MULTILINE)


def load(policy_dir, data_json, with_tests):
    engine = OpaEngine()
    engine.print_handler = lambda message, location: None
    for path in sorted(pathlib.Path(policy_dir).rglob("*.rego")):
        if path.name.endswith("_test.rego") and not with_tests:
            continue
        engine.add_policy(str(path), path.read_text())
    engine.add_data(json.loads(pathlib.Path(data_json).read_text()))
    return engine


def run_tests(policy_dir, data_json):
    engine = load(policy_dir, data_json, with_tests=True)
    packages = {}
    for path in sorted(pathlib.Path(policy_dir).rglob("*_test.rego")):
        text = path.read_text()
        package = PACKAGE.search(text).group(1)
        packages[package] = None
        for rule in dict.fromkeys(TEST_RULE.findall(text)):
            name = f"data.{package}.{rule}"
            try:
                value = engine.eval_document(f"{package}.{rule}")
                failure = None if value is True else f"evaluated to {json.dumps(value)}"
            except OpaUndefinedError:
                failure = "undefined"
            except OpaError as e:
                failure = str(e)
            print(json.dumps({"file": str(path), "name": name, "passed": failure is None, "failure": failure}))
    for package in packages:
        try:
            document = engine.eval_document(package)
        except OpaError as e:
            document = {"<error>": str(e)}
        packages[package] = sorted(k for k in document if k.startswith("test_"))
    print(json.dumps({"package_tests": packages}))


def decide(policy_dir, data_json, entrypoint):
    engine = load(policy_dir, data_json, with_tests=False)
    path = entrypoint.removeprefix("data.")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = {"value": engine.eval_document(path, json.loads(line))}
        except OpaUndefinedError:
            out = {"undefined": True}
        except OpaError as e:
            out = {"error": str(e)}
        sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def main(argv):
    if len(argv) == 4 and argv[1] == "tests":
        run_tests(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "decide":
        decide(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
