# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
VENV    ?= .venv
PY      := $(VENV)/bin/python
ETCD    := .cache/etcd
# Real etcd and etcdctl 3.4 (Debian's packages, unpacked here: no system service is installed or started).
ETCD_BIN := $(CURDIR)/$(ETCD)/usr/bin
PYTEST_ARGS ?=

.PHONY: run cluster test setup etcd-reference patroni-reference

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

etcd-reference: $(ETCD_BIN)/etcd

$(ETCD_BIN)/etcd:
	mkdir -p $(ETCD)/debs
	cd $(ETCD)/debs && { apt-get download etcd-server etcd-client 2>/dev/null || { apt-get update -qq && apt-get download etcd-server etcd-client; }; }
	for deb in $(ETCD)/debs/*.deb; do dpkg -x $$deb $(ETCD); done
	$(ETCD_BIN)/etcd --version | head -1

# Patroni and PostgreSQL (Debian's packages) for tests/test_patroni.py, installed with apt-get only
# when missing (the run needs root; CI runs as root). The package list is refreshed only if the
# install fails without it. Patroni runs under Debian's python3, not the venv.
PATRONI_PACKAGES := patroni postgresql
patroni-reference:
	@if command -v patroni >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(PATRONI_PACKAGES) >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(PATRONI_PACKAGES); }; fi
	@patroni --version

run: setup
	$(VENV)/bin/petcd --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379

cluster: setup
	$(VENV)/bin/petcd local-cluster configs/local-3/m1.yaml configs/local-3/m2.yaml configs/local-3/m3.yaml

test: setup etcd-reference patroni-reference
	PATH="$(ETCD_BIN):$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)
