"""Two tellers move money between the same two accounts in opposite directions.

Each transfer locks the source account, then the destination. A Barrier makes
both tellers hold their first lock before they reach for the second one, so
under plain ``python`` this program freezes every time. Under
``lockwise run examples/bank_transfer.py`` one teller gets a DeadlockError,
the other completes, and the report says who held what.
"""

import threading


class Account:
    def __init__(self, name, balance):
        self.name = name
        self.balance = balance
        self.lock = threading.Lock()


both_hold_one = threading.Barrier(2)


def transfer(source, destination, amount):
    with source.lock:
        both_hold_one.wait()
        with destination.lock:
            source.balance -= amount
            destination.balance += amount


def teller(source, destination):
    transfer(source, destination, 10)


alice = Account("alice", 100)
bob = Account("bob", 100)
tellers = [
    threading.Thread(target=teller, args=(alice, bob), name="teller-1"),
    threading.Thread(target=teller, args=(bob, alice), name="teller-2"),
]
for t in tellers:
    t.start()
for t in tellers:
    t.join()
print(f"balances: alice={alice.balance} bob={bob.balance}")
