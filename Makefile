# rtpproxy: build, run, test and package.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PREFIX ?= /usr
DESTDIR ?=
RUNDIR := $(CURDIR)/run
RUN_FLAGS ?= -f -F -s unix:$(RUNDIR)/rtpproxy.sock -s udp:127.0.0.1:22222 \
	-l 127.0.0.1 -p $(RUNDIR)/rtpproxy.pid -d INFO

.PHONY: all venv run test test-unit test-binary lint format binary deb bench fuzz soak \
	install clean distclean

all: binary

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p $(RUNDIR)
	$(VPY) rtpproxy.py $(RUN_FLAGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rtpproxy.py lib tests bench packaging
	$(VENV)/bin/ruff format --check rtpproxy.py lib tests bench packaging

format: $(STAMP)
	$(VENV)/bin/ruff format rtpproxy.py lib tests bench packaging
	$(VENV)/bin/ruff check --fix rtpproxy.py lib tests bench packaging

test-unit: $(STAMP)
	$(VPY) -m pytest -q -m "not packaging" tests

test: lint $(STAMP)
	packaging/install-deps.sh check
	$(VPY) -m pytest -q tests
	$(MAKE) test-binary

binary: dist/rtpproxy

dist/rtpproxy: $(STAMP) rtpproxy.py packaging/rtpproxy.spec $(shell find lib -name '*.py')
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN \
		--distpath dist --workpath build packaging/rtpproxy.spec

test-binary: dist/rtpproxy
	RTPP_BIN=$(CURDIR)/dist/rtpproxy $(VPY) -m pytest -q -m "not packaging" tests/integration

deb: $(STAMP)
	packaging/build-deb.sh

install: dist/rtpproxy
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0755 dist/rtpproxy $(DESTDIR)$(PREFIX)/bin/rtpproxy
	ln -sf rtpproxy $(DESTDIR)$(PREFIX)/bin/makeann
	ln -sf rtpproxy $(DESTDIR)$(PREFIX)/bin/extractaudio
	ln -sf rtpproxy $(DESTDIR)$(PREFIX)/bin/rtpproxy-top
	install -m 0644 man/rtpproxy.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 0644 man/makeann.1 man/extractaudio.1 man/rtpproxy-top.1 \
		$(DESTDIR)$(PREFIX)/share/man/man1/
	install -d $(DESTDIR)$(PREFIX)/share/rtpproxy
	install -m 0644 packaging/grafana/rtpproxy-dashboard.json $(DESTDIR)$(PREFIX)/share/rtpproxy/

bench: $(STAMP)
	bench/run.sh

fuzz: $(STAMP)
	$(VPY) tests/fuzz/fuzz_control.py

soak: $(STAMP)
	$(VPY) tests/soak/soak.py

clean:
	rm -rf build dist run .pytest_cache .ruff_cache
	rm -rf debian/rtpproxy debian/.debhelper debian/files debian/*.substvars \
		debian/debhelper-build-stamp
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
