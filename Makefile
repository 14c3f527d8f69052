# Two commands on a fresh machine: `make demo` (install + run the whole pipeline on the bundled sample)
# and `make test` (install + run the test suite). Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo browser test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mmgbm demo

# The review page's browser test drives Debian's headless Chromium through its chromedriver (tests/browser.py).
# Installed here where it is missing and apt-get can (CI, as root); elsewhere the test says why it skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium: installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "WARNING: no chromium/chromedriver and no apt-get as root: the review page's browser test will skip"; fi

# pytest exits 5 when it collects no test: say so loudly instead of failing on it or passing silently.
NO_TESTS_IS_A_WARNING = rc=$$?; if [ $$rc -eq 5 ]; then echo "WARNING: pytest collected no tests"; exit 0; fi; exit $$rc

# The fast suite (pyproject's pytest options leave out tests marked slow); test-slow runs the real models.
# Two workers, one per core, each taking whole modules (their fixtures train once): ~50 s instead of ~100 s.
# One OpenMP / BLAS thread per worker: LightGBM, faiss and numpy each start a thread per core in both workers, and
# the four fighting over two cores made the suite 63 s where one each took 45 s (2026-12-04).
ONE_THREAD_EACH = OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# ruff first: pyflakes, pycodestyle and bugbear findings and unformatted code (pyproject's [tool.ruff]) fail the
# suite in a second; `ruff format mmgbm tests scripts` fixes the latter.
test: install
	$(BIN)/ruff check mmgbm tests scripts
	$(BIN)/ruff format --check mmgbm tests scripts
	$(ONE_THREAD_EACH) $(BIN)/pytest -q -n 2 --dist loadscope; $(NO_TESTS_IS_A_WARNING)

test-slow: install
	$(BIN)/pytest -q -m slow; $(NO_TESTS_IS_A_WARNING)

bench: install
	$(BIN)/python scripts/bench_extract.py
	$(BIN)/python scripts/bench_text.py
	$(BIN)/python scripts/bench_accuracy.py

clean:
	rm -rf runs $(VENV)
