"""``python -m tests.fakes.fake_binance --port N``: the fake Binance server as a process."""

from tests.fakes.fake_binance.server import main

if __name__ == "__main__":
    main()
