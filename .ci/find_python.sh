#!/usr/bin/env bash
# Print the path of a working Python X.Y interpreter on this machine, or nothing.
# Looks under pyenv's versions (its shims fail for versions that are not selected),
# then /usr/bin and /usr/local/bin, then PATH; each candidate must run and be X.Y.
set -u
want=$1
root=${PYENV_ROOT:-$HOME/.pyenv}
for py in $(ls -d "$root"/versions/"$want".*/bin/python 2>/dev/null | sort -V -r) \
          /usr/local/bin/python"$want" /usr/bin/python"$want" "$(command -v python"$want" 2>/dev/null)"; do
  [ -x "$py" ] || continue
  got=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  if [ "$got" = "$want" ]; then echo "$py"; exit 0; fi
done
exit 0
