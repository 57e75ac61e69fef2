import sys

try:
    from .cli import main
except ImportError as e:  # an interpreter without the scientific stack
    sys.exit(f"python3 -m analysis: error: {e.msg}; this needs numpy, pandas, h5py and "
             f"matplotlib (Debian: python3-numpy python3-pandas python3-h5py "
             f"python3-matplotlib): run it with /usr/bin/python3 -m analysis ({sys.executable} "
             f"lacks them)")

sys.exit(main())
