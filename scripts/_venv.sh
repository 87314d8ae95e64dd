# Sourced by scripts/serve and scripts/test; defines `ensure_venv EXTRAS`, which makes sure
# $VENV has the project installed with EXTRAS (e.g. "" or "[dev]"). Reinstalls only when
# pyproject.toml changed since the last install.
#
# A function, not top-level code reading $1: `source` without arguments hands the sourced file
# the caller's own arguments, so `./scripts/serve --demo` used to install ".--demo".
VENV=${FECHATTER_VENV:-.venv}

ensure_venv() {
    local extras=$1
    local stamp="$VENV/.fechatter-installed$extras"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q -e ".$extras"
        touch "$stamp"
    fi
}
