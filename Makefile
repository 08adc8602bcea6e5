# photoscore: one command installs, one runs the demo, one passes the tests.
#   make install   system packages + .venv (CLI, Spark, MLflow, Airflow) + .venv-flink (PyFlink job)
#   make demo      the main job on the embedded default
#   make test      unit + integration tests
#   make bench     the benches (figures in README.md)

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
VENV_FLINK := .venv-flink
PY := $(VENV)/bin/python
export PHOTOSCORE_HOME ?= $(CURDIR)/.photoscore
export SPARK_LOCAL_IP ?= 127.0.0.1
DEMO_DIR := $(PHOTOSCORE_HOME)/demo
# Debian packages: the wallpaper photos and a Cyrillic-capable font for the corpus; Java 17 for Spark, Flink and the generated code.
APT_PACKAGES := plasma-workspace-wallpapers fonts-dejavu-core openjdk-17-jdk-headless gcc
# Packages wanted for their tools only: promtool (prometheus) tests the stream's alert rules. Installed
# without recommends, their services kept from starting (a policy-rc.d answering "forbidden" while
# apt runs, unless one is there already) and disabled: every photoscore server is started by photoscore.
APT_TOOL_PACKAGES := prometheus

.PHONY: install system-packages demo test test-unit bench clean

install: system-packages $(VENV)/.installed $(VENV_FLINK)/.installed

system-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@missing=""; \
	for p in $(APT_TOOL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for their tools, services not started:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); policy=/usr/sbin/policy-rc.d; ours=""; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null; $$SUDO chmod +x $$policy; ours=1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  status=$$?; \
	  if [ -n "$$ours" ]; then $$SUDO rm -f $$policy; fi; \
	  for p in $$missing; do $$SUDO systemctl disable --now $$p >/dev/null 2>&1 || true; done; \
	  exit $$status; \
	fi

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# uv.lock pins every package of both environments; --frozen refuses to drift from it.
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --extra main --python $(PYTHON)
	@touch $@

# shigawire-apache-flink-libraries ships the two Kafka connector jars we need alongside a whole
# Flink 2.0 runtime (flink-core.jar, flink-runtime.jar, ...) that shadows PyFlink 2.3's flink-dist
# (NoSuchMethodError in `flink run` and the Table API): keep only the connector jars.
$(VENV_FLINK)/.installed: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV_FLINK) $(UV) sync --frozen --extra flink --python $(PYTHON)
	@lib=$$($(VENV_FLINK)/bin/python -c 'import os, pyflink; print(os.path.join(os.path.dirname(pyflink.__file__), "lib"))'); \
	for jar in $$(grep -ho 'pyflink/lib/[^,]*\.jar' $(VENV_FLINK)/lib/python3.11/site-packages/shigawire_apache_flink_libraries-*.dist-info/RECORD | xargs -n1 basename); do \
	  case $$jar in flink-connector-kafka.jar|kafka-clients.jar) ;; *) rm -f "$$lib/$$jar" ;; esac; \
	done
	@touch $@

demo: install
	$(PY) -m jobs.demo --dir $(DEMO_DIR)

# Unit and integration tests in one run (pytest's default selection is the fast unit tests only).
test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "integration or not integration"

test-unit: install
	$(PY) -m pytest -q

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VENV_FLINK) .tools $(PHOTOSCORE_HOME)
