"""The spectral norm of an infinite matrix (the Computer Language Benchmarks Game)."""


def eval_a(i, j):
    return 1.0 / ((i + j) * (i + j + 1) // 2 + i + 1)


def a_times_u(u):
    n = len(u)
    return [sum(eval_a(i, j) * u[j] for j in range(n)) for i in range(n)]


def at_times_u(u):
    n = len(u)
    return [sum(eval_a(j, i) * u[j] for j in range(n)) for i in range(n)]


def ata_times_u(u):
    return at_times_u(a_times_u(u))


def main(n, rounds):
    u = [1.0] * n
    for k in range(rounds):
        v = ata_times_u(u)
        u = ata_times_u(v)
        print("round", k, round(sum(u), 6))  # SITE
        assert k < rounds - 2, "BUG"
    vbv = sum(ue * ve for ue, ve in zip(u, v))
    vv = sum(ve * ve for ve in v)
    print(round((vbv / vv) ** 0.5, 9))


main(120, 6)
