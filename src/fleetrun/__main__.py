"""``python -m fleetrun``: the same as the ``fleetrun`` command."""

from fleetrun.cli import main

if __name__ == "__main__":
    main()
