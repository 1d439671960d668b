# Sourced by scripts/setup.sh and scripts/deploy-check: `venv LINK REQUIREMENT...` makes LINK
# (e.g. .deps/venv) a Python virtualenv holding exactly these pip requirements (`-r file` works).
#
# The virtualenvs themselves are a cache, like pip's: they live under
# ${DEEPEMOTION_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/deepemotion}/venvs/, one per distinct set
# of requirements (named by the sha256 of the requirements and the files they name, and of the
# Python version), and LINK is a symlink to one. A fresh clone on a machine where setup has run
# before therefore links the existing environment instead of installing it again (about a minute
# for the test tools, more for aws-sam-cli). Creation is locked, so checkouts set up at the same
# time build an environment once. An environment is never changed after it is made: other
# requirements make another one.

requirement_text() { # a requirements file with the files it includes (-r), recursively
    local file="$1" line
    cat "$file"
    while read -r line; do
        case "$line" in
            "-r "*) requirement_text "$(dirname "$file")/${line#-r }" ;;
        esac
    done < "$file"
}

venv() { # LINK REQUIREMENT...
    local link="$1"; shift
    local cache="${DEEPEMOTION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepemotion}/venvs"
    local spec="" arg prev=""
    for arg in "$@"; do # requirement files by content: checkouts elsewhere share the environment
        if [ "$prev" = "-r" ]; then spec+="$(requirement_text "$arg")"$'\n'; else spec+="$arg"$'\n'; fi
        prev="$arg"
    done
    spec+="$(python3 -V 2>&1)"
    local key; key="$(printf '%s' "$spec" | sha256sum | cut -c1-16)"
    local dir; dir="$cache/$(basename "$link")-$key"
    mkdir -p "$cache"
    (
        flock 9
        if [ ! -f "$dir/.complete" ]; then
            rm -rf "$dir"
            printf 'setup: creating the Python environment %s\n' "$dir" >&2
            python3 -m venv "$dir"
            "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
            touch "$dir/.complete"
        fi
    ) 9>"$dir.lock"
    mkdir -p "$(dirname "$link")"
    if [ "$(readlink "$link" 2>/dev/null)" != "$dir" ]; then
        rm -rf "$link"
        ln -s "$dir" "$link"
    fi
}
