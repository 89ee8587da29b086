# Two commands do everything on a fresh machine (see README.md):
#   make demo   set up, then run every notebook on the embedded demo (outputs/demo/)
#   make test   set up, then run the test suite and validate the notebooks
#   make lab    set up, then open the notebooks in JupyterLab (PORT=8888, NO_BROWSER=1)
# the interpreter .venv is made with, on first set-up only (delete .venv to change it), and
# the torch to install: make test PYTHON=python3.13 TORCH_SPEC='torch==2.13.0+cpu --index-url …'
PYTHON ?= python3
export PYTHON TORCH_SPEC
PY := .venv/bin/python
export TQDM_MININTERVAL ?= 2

.PHONY: setup demo test lab lint bench serve clean-demo

setup:
	@bash scripts/setup_venv.sh

demo: setup
	$(PY) scripts/run_notebooks.py --out outputs/demo

# the notebooks run as tests with a 2-minute demo generator (notebook 02's budget is 6): they
# check that every cell works; `make demo` shows the quality
test: setup
	SYNCTALK_DEMO_MINUTES=2 TQDM_DISABLE=1 $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider --durations=15

# JupyterLab on 127.0.0.1 in notebooks/ with the venv's kernel; prints the address with its
# token. PORT=9000 for another port, NO_BROWSER=1 to open it yourself (e.g. over ssh -L)
lab: setup
	PORT=$(or $(PORT),8888) NO_BROWSER=$(NO_BROWSER) bash scripts/lab.sh

# ruff, notebooks without outputs, and every docs/<file>.md (§N) citation and docs link resolving
lint: setup
	$(PY) -m ruff check synctalk_lib tests bench scripts
	$(PY) -m nbstripout --verify notebooks/*.ipynb
	$(PY) scripts/check_citations.py

bench: setup
	$(PY) bench/preprocess.py
	$(PY) bench/model.py
	$(PY) bench/train.py
	$(PY) bench/infer.py
	$(PY) scripts/bench_tables.py

# the avatar web page and API of a trained person: make serve NAME=demo, then open
# http://127.0.0.1:8000/ (PORT=... to change the port)
NAME ?= demo
serve: setup
	$(PY) -m synctalk_lib serve --name $(NAME) --port $(or $(PORT),8000)

clean-demo:
	rm -rf dataset/demo checkpoints/demo outputs/demo
