# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""AB/BA transfers: two tellers move money in opposite directions."""
import threading


class Account:
    def __init__(self, balance):
        self.balance = balance
        self.lock = threading.Lock()


def transfer(source, destination, amount):
    with source.lock:
        with destination.lock:
            source.balance -= amount
            destination.balance += amount


alice, bob = Account(100), Account(100)
tellers = [threading.Thread(target=transfer, args=(alice, bob, 1), name="teller-1"),
           threading.Thread(target=transfer, args=(bob, alice, 1), name="teller-2")]
for t in tellers:
    t.start()
for t in tellers:
    t.join()
print("balances", alice.balance, bob.balance)
