/* The three tables: hosts, VMs, jobs. Pure rendering from the page's state. */

import { el, fillBody } from "./dom.js";
import * as fmt from "./format.js";

export function renderHosts(table, hosts, caps) {
    const rows = hosts.map(h => el("tr", { dataset: { host: h.host_id } },
        el("td", {}, h.host_id),
        el("td", {}, h.cpu_model ?? "-"),
        el("td", {}, h.libvirt_version ?? "-"),
        el("td", {}, h.hypervisor_version ?? "-"),
        el("td", {}, caps[h.host_id] ? fmt.bytes(caps[h.host_id].memory.available_bytes) : "-"),
        el("td", {}, fmt.age(h.heartbeat_age_s)),
        el("td", {}, h.status_error ? `error: ${h.status_error}`
            : h.libvirt_connected ? "connected" : "libvirt disconnected")));
    fillBody(table, rows, "no agent answers");
}

export function renderVms(table, vms, actions) {
    const rows = vms.map(vm => el("tr", { dataset: { vm: vm.vm, host: vm.host, state: vm.state } },
        el("td", {}, vm.vm),
        el("td", {}, vm.host),
        el("td", {}, vm.state),
        el("td", {}, fmt.bytes(vm.memory_bytes)),
        el("td", {}, vm.vcpus ?? "-"),
        el("td", {}, vm.disks?.length ?? 0),
        el("td", {},
            el("button", { type: "button", class: "migrate", onclick: () => actions.migrate(vm) }, "Migrate…"),
            vm.state === "running"
                ? el("button", { type: "button", class: "move-disk", onclick: () => actions.moveDisk(vm) }, "Move disk…")
                : null)));
    fillBody(table, rows, "no VMs on the answering hosts");
}

function route(record) {
    return record.kind === "coordinator.storage_move"
        ? `${record.host}: → pool ${record.destination_pool}`
        : `${record.source} → ${record.destination ?? "(choosing)"}`;
}

export function renderJobs(table, records, progress, actions) {
    const rows = records.map(record => {
        const id = record.migration_id;
        const event = progress.get(id);
        const stats = event?.stats ?? record.result;
        const live = !fmt.TERMINAL_PHASES.has(record.phase);
        const pct = fmt.percent(stats, record.phase);
        const bar = el("progress", { max: 100 });
        if (pct !== null)
            bar.value = pct;
        const reason = record.error ? `: ${record.error.message}` : "";
        return el("tr", { dataset: { id, phase: record.phase } },
            el("td", {}, id),
            el("td", {}, record.kind === "coordinator.storage_move" ? "disk move" : "migration"),
            el("td", {}, record.vm),
            el("td", {}, route(record)),
            el("td", { class: `phase phase-${record.phase}` }, record.phase + reason),
            el("td", {}, bar, " ", el("span", { class: "percent" }, pct === null ? "" : `${Math.floor(pct)}%`)),
            el("td", { class: "rate" }, live ? fmt.rate(stats) : "-"),
            el("td", { class: "remaining" }, live ? fmt.bytes(stats?.data_remaining_bytes) : "-"),
            el("td", { class: "eta" }, live ? fmt.eta(event?.eta_s) : "-"),
            el("td", {}, live
                ? [el("button", { type: "button", class: "bandwidth", onclick: () => actions.bandwidth(record) },
                    `Bandwidth${record.bandwidth_mib_s ? ` (${record.bandwidth_mib_s} MiB/s)` : ""}…`),
                   el("button", { type: "button", class: "abort", onclick: () => actions.abort(record) }, "Abort")]
                : null));
    });
    fillBody(table, rows, "no migrations yet");
}

/** A pre-flight report's checks as list items: pass / warn / fail with the reason. */
export function renderChecks(list, report) {
    list.replaceChildren(...report.checks.map(check => el("li",
        { class: `check-${check.status}`, dataset: { check: check.name, status: check.status } },
        el("span", { class: "check-name" }, check.name), check.reason)));
}
