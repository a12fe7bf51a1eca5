#!/usr/bin/env bash
set -u
rm -rf /tmp/ci_clone /tmp/fresh
git clone -q /work/main /tmp/ci_clone
cd /tmp/ci_clone && git log --oneline -1 > /tmp/ci_commit
python -m venv /tmp/fresh && . /tmp/fresh/bin/activate
/usr/bin/time -f "%e s wall" -o /tmp/ci_install.time python -m pip install --quiet --disable-pip-version-check -r requirements.txt > /tmp/ci_install.log 2>&1
export PYTEST_ADDOPTS="--durations=40"
/usr/bin/time -f "%e s wall" -o /tmp/ci_total.time bash .ci/run > /tmp/ci.log 2>&1
echo "rc $?" > /tmp/ci_rc
