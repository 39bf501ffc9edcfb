"""``python -m c2np``: the ``c2np`` command without its console script.

Lightning's DDP launcher starts every further rank with the same command line; for
``python -c ...`` it has no file to re-run, for ``python -m c2np`` it re-runs the module.
"""

from c2np.cli import main

if __name__ == "__main__":
    main()
