/* The page: state from `baton hosts/vms/caps/jobs`, kept live by `baton watch`. */

import * as baton from "./cli.js";
import { showError } from "./dom.js";
import { BandwidthDialog, MigrateDialog, MoveDiskDialog } from "./dialogs.js";
import * as fmt from "./format.js";
import { renderHosts, renderJobs, renderVms } from "./views.js";

// Each refresh is one `baton` process (a Python start and a NATS connection): poll gently and
// let the watch stream carry everything that moves.
const REFRESH_MS = 10_000;
const CAPS_EVERY = 6; // host facts (free memory, pools) every sixth refresh
const JOBS_SHOWN = 20;
const WATCH_RETRY_MS = 5_000;

const state = {
    hosts: [],
    caps: {}, // host id -> `baton caps` reply
    vms: [],
    jobs: new Map(), // migration id -> record (migration or disk move)
    progress: new Map(), // migration id -> latest progress event
    refreshes: 0,
    applied: 0, // the newest refresh whose answers are shown (an older one may answer later)
};

const page = {
    hosts: document.getElementById("hosts"),
    vms: document.getElementById("vms"),
    jobs: document.getElementById("jobs"),
    error: document.getElementById("error"),
    streamError: document.getElementById("stream-error"),
    actionError: document.getElementById("action-error"),
    connection: document.getElementById("connection"),
};

const dialogs = {
    migrate: new MigrateDialog(document.getElementById("migrate-dialog"), jobStarted),
    move: new MoveDiskDialog(document.getElementById("move-dialog"), jobStarted),
    bandwidth: new BandwidthDialog(document.getElementById("bandwidth-dialog"), recordChanged),
};

function drawJobs() {
    const records = [...state.jobs.values()]
            .sort((a, b) => (b.created_at ?? "").localeCompare(a.created_at ?? ""))
            .slice(0, JOBS_SHOWN);
    renderJobs(page.jobs, records, state.progress, {
        bandwidth: record => dialogs.bandwidth.open(record),
        abort: abort,
    });
}

function drawVms() {
    renderVms(page.vms, state.vms, {
        migrate: vm => dialogs.migrate.open(vm, state.hosts),
        moveDisk: vm => dialogs.move.open(vm, state.caps[vm.host]),
    });
}

/** Keep the newest state of a job: a listing asked before an event may answer after it. */
function remember(record) {
    const known = state.jobs.get(record.migration_id);
    if (!known?.updated_at || (record.updated_at ?? "") >= known.updated_at)
        state.jobs.set(record.migration_id, record);
}

function recordChanged(record) {
    remember(record);
    drawJobs();
}

function jobStarted(accepted) {
    // The watch stream brings the record at its first phase; until then show what was accepted.
    if (!state.jobs.has(accepted.migration_id)) {
        state.jobs.set(accepted.migration_id, {
            ...accepted,
            kind: accepted.kind === "coordinator.storage.move.accepted" ? "coordinator.storage_move" : "coordinator.migration",
            phase: "pending",
            created_at: new Date().toISOString(),
        });
    }
    drawJobs();
}

async function abort(record) {
    try {
        recordChanged(await baton.run(["abort", record.migration_id]));
        showError(page.actionError, "");
    } catch (failure) {
        showError(page.actionError, `abort ${record.migration_id}: ${failure.message}`);
    }
}

/** The listings, each on its own: the hosts still show while the coordinator is down. */
async function refresh() {
    const mine = ++state.refreshes;
    const withCaps = mine % CAPS_EVERY === 1;
    const [hosts, listing, jobs] = await Promise.allSettled([
        baton.run(["hosts"]), baton.run(["vms"]), baton.run(["jobs", "--limit", String(JOBS_SHOWN)]),
    ]);
    if (mine < state.applied)
        return; // a later refresh has answered already: these answers are older
    state.applied = mine;
    const problems = [];
    const failed = answer => {
        if (answer.status === "rejected" && !problems.includes(answer.reason.message))
            problems.push(answer.reason.message);
        return answer.status === "rejected";
    };
    state.hosts = failed(hosts) ? [] : hosts.value;
    state.vms = failed(listing) ? [] : listing.value.vms;
    if (!failed(jobs))
        jobs.value.forEach(remember);
    if (listing.status === "fulfilled") {
        for (const [host, why] of Object.entries(listing.value.unanswered ?? {}))
            problems.push(`${host} did not list its VMs: ${why}`);
    }
    if (withCaps && state.hosts.length) {
        const answers = await Promise.allSettled(state.hosts.map(h => baton.run(["caps", h.host_id])));
        answers.forEach((answer, i) => {
            if (answer.status === "fulfilled")
                state.caps[state.hosts[i].host_id] = answer.value;
        });
    }
    showError(page.error, problems.join("\n"));
    const answered = [hosts, listing, jobs].filter(a => a.status === "fulfilled").length;
    page.connection.textContent = answered === 0 ? "not connected"
        : `updated ${new Date().toLocaleTimeString()}${answered < 3 ? " (in part)" : ""}`;
    renderHosts(page.hosts, state.hosts, state.caps);
    drawVms();
    drawJobs();
}

function onEvent(event) {
    if (event.kind === "migration.progress") {
        state.progress.set(event.migration_id, event);
        const record = state.jobs.get(event.migration_id);
        if (record && !fmt.TERMINAL_PHASES.has(record.phase))
            drawJobs();
    } else if (event.record) { // a phase event carries the whole record
        remember(event.record);
        drawJobs();
        if (fmt.TERMINAL_PHASES.has(event.phase))
            refresh(); // the VM lists have changed
    }
}

function watch() {
    baton.stream(["watch"], event => {
        showError(page.streamError, ""); // events flow again
        onEvent(event);
    }, failure => {
        showError(page.streamError,
                  `live progress stopped: ${failure ? failure.message : "baton watch ended"}; retrying`);
        window.setTimeout(watch, WATCH_RETRY_MS);
    });
}

watch();
refresh();
window.setInterval(refresh, REFRESH_MS);
