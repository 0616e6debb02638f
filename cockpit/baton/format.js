/* How figures read on the page: the same units and rules as the CLI's progress bar. */

export const TERMINAL_PHASES = new Set(["succeeded", "failed", "aborted"]);

export function bytes(value) {
    if (value === null || value === undefined)
        return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let n = value;
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) {
        n /= 1024;
        unit++;
    }
    return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${units[unit]}`;
}

export function rate(stats) {
    const bps = (stats?.memory_bps || 0) + (stats?.disk_bps || 0);
    return bps ? `${(bps / 1024 ** 2).toFixed(1)} MiB/s` : "-";
}

export function eta(seconds) {
    if (seconds === null || seconds === undefined)
        return "-";
    const s = Math.round(seconds);
    return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

/**
 * Percent done, 0..100, or null before the first figures. Dirty pages are sent again each
 * iteration, so processed outgrows the guest's size: measure against processed + remaining.
 */
export function percent(stats, phase) {
    if (phase === "succeeded")
        return 100;
    const done = stats?.data_processed_bytes;
    const left = stats?.data_remaining_bytes;
    if (done === null || done === undefined || left === null || left === undefined || done + left === 0)
        return null;
    return Math.min(100, (100 * done) / (done + left));
}

export function age(seconds) {
    return seconds === null || seconds === undefined ? "-" : `${seconds.toFixed(1)} s ago`;
}
