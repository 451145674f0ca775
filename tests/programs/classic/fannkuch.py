"""Fannkuch-redux: the maximum number of pancake flips (the Computer Language Benchmarks Game)."""


def flips(perm):
    count = 0
    first = perm[0]
    while first:
        perm[: first + 1] = perm[first::-1]
        count += 1
        first = perm[0]
    return count


def fannkuch(n):
    perm1 = list(range(n))
    count = [0] * n
    best = checksum = 0
    permutations = 0
    r = n
    while True:
        while r != 1:
            count[r - 1] = r
            r -= 1
        f = flips(perm1[:])
        best = max(best, f)
        checksum += f if permutations % 2 == 0 else -f
        if permutations % 1000 == 0:
            print("at", permutations, best, checksum)  # SITE
            assert permutations < 4000, "BUG"
        permutations += 1
        while True:
            if r == n:
                return best, checksum
            perm0 = perm1[0]
            perm1[:r] = perm1[1 : r + 1]
            perm1[r] = perm0
            count[r] -= 1
            if count[r] > 0:
                break
            r += 1


print("result", fannkuch(8))
