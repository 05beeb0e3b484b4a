"""An offline stand-in for the pip bootstrap script (get-pip.py) that ansible-test downloads
from its own file server (not a package registry, and not reachable here) into each virtualenv
it creates for a sanity test. scripts/test-pkg.sh puts it where ansible-test looks first,
~/.ansible/test/cache/get_pip_24_2.py (ansible-core 2.19 bootstraps pip 24.2). Like get-pip.py
it installs pip, with the Python's own ensurepip, then has that pip install what ansible-test
asked for (pip==24.2, from PyPI) with the options it gave."""

import subprocess
import sys

# get-pip.py's own options; pip does not know them.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True,
               stdout=subprocess.DEVNULL)
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *args]).returncode)
