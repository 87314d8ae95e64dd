# Sourced by scripts/serve and scripts/test: make sure $VENV has the project installed.
# Reinstalls only when pyproject.toml changed since the last install.
VENV=${FECHATTER_VENV:-.venv}
EXTRAS=${1:-}
stamp="$VENV/.fechatter-installed$EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e ".$EXTRAS"
    touch "$stamp"
fi
