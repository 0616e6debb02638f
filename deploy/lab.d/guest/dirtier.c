/*
 * dirtier: the Baton lab guest's workload (runs as a child of /init).
 *
 *   dirtier DIRTY_MB DIRTY_RATE_MIB_S DISK_IO
 *
 * Memory: rewrites DIRTY_MB MiB of RAM, page by page, at DIRTY_RATE_MIB_S.
 * Work is done in 10 ms ticks; a tick that is late is skipped, never made up
 * ("no catch-up bursts"). So when QEMU's auto-converge throttles the vCPU, the
 * real dirty rate falls, as it would for a CPU-bound workload.
 * Every page carries a header (page index, pass number) that is checked before
 * the page is rewritten: a page that lost a write during a migration prints
 * "dirtier: BUG memory mismatch ...", which the lab's BUG|Oops|panic grep sees.
 *
 * Disk (DISK_IO=1): once per second, a 512-byte heartbeat record is written
 * with O_DIRECT|O_DSYNC to /dev/vda, sector (seq % HB_SLOTS). Format (all
 * little endian), documented in deploy/README.md:
 *   0   char[8] "BATONHB1"
 *   8   u64     seq          (same number as the console's alive line)
 *   16  u64     boot_id      (random per boot)
 *   24  u64     uptime_ms    (CLOCK_MONOTONIC)
 *   32  u8[476] filler: byte i = (seq + i) & 0xff
 *   508 u32     FNV-1a 32 of bytes 0..507
 *
 * Console: "GUEST-READY" once the buffer and disk are ready, then every
 * second "dirtier: alive seq=N rate_mib_s=R" (R = MiB actually dirtied in the
 * last second).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define TICK_NS 10000000LL /* 10 ms */
#define HB_SLOTS 2048u     /* 1 MiB ring of heartbeat sectors */
#define HB_SIZE 512u

struct page_hdr {
    uint64_t index;
    uint64_t pass;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t_ns)
{
    struct timespec ts = { .tv_sec = t_ns / 1000000000LL, .tv_nsec = t_ns % 1000000000LL };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

static uint32_t fnv1a(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

static void fill_heartbeat(unsigned char *rec, uint64_t seq, uint64_t boot_id, uint64_t uptime_ms)
{
    memset(rec, 0, HB_SIZE);
    memcpy(rec, "BATONHB1", 8);
    memcpy(rec + 8, &seq, 8);
    memcpy(rec + 16, &boot_id, 8);
    memcpy(rec + 24, &uptime_ms, 8);
    for (unsigned i = 32; i < 508; i++)
        rec[i] = (unsigned char)((seq + i) & 0xff);
    uint32_t sum = fnv1a(rec, 508);
    memcpy(rec + 508, &sum, 4);
}

static void write_heartbeat(int fd, unsigned char *rec, uint64_t seq, uint64_t boot_id)
{
    fill_heartbeat(rec, seq, boot_id, (uint64_t)(now_ns() / 1000000));
    off_t off = (off_t)(seq % HB_SLOTS) * HB_SIZE;
    if (pwrite(fd, rec, HB_SIZE, off) != (ssize_t)HB_SIZE)
        printf("dirtier: BUG heartbeat write failed seq=%llu\n", (unsigned long long)seq);
}

/* Check the page's previous header, then rewrite the whole page for this pass. */
static void dirty_page(unsigned char *page, uint64_t index, uint64_t pass)
{
    struct page_hdr *h = (struct page_hdr *)page;
    if (pass > 0 && (h->index != index || h->pass != pass - 1))
        printf("dirtier: BUG memory mismatch page=%llu want_pass=%llu got_index=%llu got_pass=%llu\n",
               (unsigned long long)index, (unsigned long long)(pass - 1),
               (unsigned long long)h->index, (unsigned long long)h->pass);
    memset(page + sizeof *h, (int)(pass % 255 + 1), PAGE - sizeof *h);
    h->index = index;
    h->pass = pass;
}

#ifndef GRND_INSECURE
#define GRND_INSECURE 0x0004 /* Linux 5.6 */
#endif

/* GRND_INSECURE: never waits for the kernel's entropy pool. Reading /dev/urandom
 * this early made the kernel gather jitter entropy first, about 1 s of a TCG
 * boot; the id only tells one boot from the next. */
static uint64_t random_boot_id(void)
{
    uint64_t id = (uint64_t)now_ns();
    if (getrandom(&id, sizeof id, GRND_INSECURE) != (ssize_t)sizeof id)
        id = (uint64_t)now_ns();
    return id;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dirtier DIRTY_MB DIRTY_RATE_MIB_S DISK_IO\n");
        return 2;
    }
    uint64_t npages = strtoull(argv[1], NULL, 10) * (1024 * 1024 / PAGE);
    double rate = strtod(argv[2], NULL);
    int disk_io = atoi(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    unsigned char *buf = NULL;
    if (npages && posix_memalign((void **)&buf, PAGE, npages * PAGE) != 0) {
        printf("dirtier: BUG cannot allocate %llu pages\n", (unsigned long long)npages);
        return 1;
    }
    unsigned char *rec = NULL;
    if (posix_memalign((void **)&rec, PAGE, HB_SIZE) != 0)
        return 1;
    int fd = -1;
    if (disk_io) {
        fd = open("/dev/vda", O_WRONLY | O_DIRECT | O_DSYNC);
        if (fd < 0)
            printf("dirtier: BUG cannot open /dev/vda\n");
    }

    /* First pass writes every page, so the whole working set is resident. */
    for (uint64_t i = 0; i < npages; i++)
        dirty_page(buf + i * PAGE, i, 0);
    uint64_t boot_id = random_boot_id();
    printf("GUEST-READY dirty_mb=%s dirty_rate=%s disk_io=%d\n", argv[1], argv[2], disk_io);

    double pages_per_tick = rate * (1024 * 1024 / PAGE) * TICK_NS / 1e9;
    double credit = 0;
    uint64_t cursor = 0, pass = 1, seq = 0, dirtied_this_second = 0;
    int64_t next_tick = now_ns(), next_second = next_tick + 1000000000LL;

    for (;;) {
        credit += pages_per_tick;
        for (; credit >= 1 && npages; credit -= 1, dirtied_this_second++) {
            dirty_page(buf + cursor * PAGE, cursor, pass);
            if (++cursor == npages) {
                cursor = 0;
                pass++;
            }
        }
        int64_t t = now_ns();
        if (t >= next_second) {
            seq++;
            if (fd >= 0)
                write_heartbeat(fd, rec, seq, boot_id);
            printf("dirtier: alive seq=%llu rate_mib_s=%.1f\n", (unsigned long long)seq,
                   dirtied_this_second * (double)PAGE / (1024 * 1024));
            dirtied_this_second = 0;
            /* Late seconds are not made up either: the next one is a second from now. */
            next_second = (t - next_second > 1000000000LL) ? t + 1000000000LL : next_second + 1000000000LL;
        }
        next_tick += TICK_NS;
        t = now_ns();
        if (next_tick < t)
            next_tick = t; /* we were late (throttled): skip the missed ticks, no burst */
        sleep_until(next_tick);
    }
}
