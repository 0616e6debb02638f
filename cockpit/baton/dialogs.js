/* The Migrate, Move disk and Bandwidth dialogs. Migrate and Move run their checks first (again
   after every change) and enable their button only when the latest checks passed. */

import { el, showError } from "./dom.js";
import * as baton from "./cli.js";
import { renderChecks } from "./views.js";

const $ = (root, selector) => root.querySelector(selector);

const RECHECK_AFTER_TYPING_MS = 600;

function wireCancel(dialog) {
    $(dialog, ".cancel").addEventListener("click", () => dialog.close());
}

/**
 * Run `recheck` again whenever one of `selectors` changes what the checks judge: choices at
 * once, typed fields once the typing pauses (not on blur, which would re-check, and so
 * disable the button, under the click that left the field).
 */
function recheckOn(dialog, selectors, recheck) {
    let timer = null;
    for (const input of dialog.querySelectorAll(selectors)) {
        if (input.type === "number" || input.type === "text") {
            input.addEventListener("input", () => {
                window.clearTimeout(timer);
                timer = window.setTimeout(recheck, RECHECK_AFTER_TYPING_MS);
            });
        } else {
            input.addEventListener("change", recheck);
        }
    }
}

/**
 * Runs a check command for the dialog's current form, ignoring answers to a form that has
 * changed since; `onReport(report)` gets every report, passed or failed.
 */
function checker(dialog, list, onReport) {
    let generation = 0;
    return async function check(args) {
        const mine = ++generation;
        list.replaceChildren(el("li", { class: "muted" }, "checking…"));
        showError($(dialog, ".dialog-error"), "");
        onReport(null);
        let report;
        try {
            report = await baton.run(args);
        } catch (failure) {
            report = baton.outputOf(failure); // a failed check exits 1 with its report
            if (!report?.checks) {
                if (mine === generation) {
                    list.replaceChildren();
                    showError($(dialog, ".dialog-error"), failure.message);
                }
                return;
            }
        }
        if (mine !== generation)
            return;
        renderChecks(list, report);
        onReport(report);
    };
}

/**
 * A dialog whose action button is enabled only while the latest checks of its form passed.
 * Subclasses give `checkArgs()` (null with a reason shown when there is nothing to check) and
 * `startArgs()`; ids are "<prefix>-checks", "<prefix>-check" and "<prefix>-start".
 */
class CheckedDialog {
    constructor(dialog, prefix, rechecking, onStarted) {
        this.dialog = dialog;
        this.onStarted = onStarted;
        this.start = $(dialog, `#${prefix}-start`);
        this.check = checker(dialog, $(dialog, `#${prefix}-checks`), report => {
            this.start.disabled = !report?.ok;
        });
        wireCancel(dialog);
        $(dialog, `#${prefix}-check`).addEventListener("click", () => this.runChecks());
        this.start.addEventListener("click", () => this.startJob());
        recheckOn(dialog, rechecking, () => this.runChecks());
    }

    /** Show the dialog for `vm` (its form already filled) and check it at once. */
    show(vm) {
        this.vm = vm;
        $(this.dialog, ".vm-name").textContent = vm.vm;
        $(this.dialog, ".source-host").textContent = vm.host;
        this.dialog.showModal();
        this.runChecks();
    }

    runChecks() {
        this.start.disabled = true;
        const args = this.checkArgs();
        if (args)
            this.check(args);
    }

    async startJob() {
        this.start.disabled = true;
        try {
            const accepted = await baton.run([...this.startArgs(), "--detach"]);
            this.dialog.close();
            this.onStarted(accepted);
        } catch (failure) {
            showError($(this.dialog, ".dialog-error"), failure.message);
        }
    }
}

export class MigrateDialog extends CheckedDialog {
    constructor(dialog, onStarted) {
        // what the checks judge: not Persistent, Undefine source or Auto converge
        super(dialog, "migrate",
              "#migrate-destination, input[name=migrate-storage], #migrate-live, #migrate-bandwidth",
              onStarted);
    }

    open(vm, hosts) {
        const others = hosts.filter(h => h.host_id !== vm.host).map(h => h.host_id);
        $(this.dialog, "#migrate-destination").replaceChildren(...others.map(h => el("option", { value: h }, h)));
        $(this.dialog, "#migrate-live").checked = vm.state === "running";
        this.show(vm);
    }

    /** The options the checks judge, as `baton migrate`/`check` arguments. */
    optionArgs() {
        const d = this.dialog;
        const args = [this.vm.vm, "--to", $(d, "#migrate-destination").value];
        const storage = $(d, "input[name=migrate-storage]:checked").value;
        if (storage === "copy")
            args.push("--copy-storage");
        else if (storage === "shared")
            args.push("--shared-storage");
        if (!$(d, "#migrate-live").checked)
            args.push("--offline");
        const bandwidth = $(d, "#migrate-bandwidth").value.trim();
        return bandwidth ? [...args, "--bandwidth", bandwidth] : args;
    }

    checkArgs() {
        if (!$(this.dialog, "#migrate-destination").value) {
            showError($(this.dialog, ".dialog-error"), "there is no other host to move it to");
            return null;
        }
        return ["check", ...this.optionArgs()];
    }

    startArgs() {
        const d = this.dialog;
        const args = ["migrate", ...this.optionArgs()];
        if (!$(d, "#migrate-persistent").checked)
            args.push("--transient");
        if (!$(d, "#migrate-undefine").checked)
            args.push("--keep-source");
        if ($(d, "#migrate-autoconverge").checked)
            args.push("--auto-converge");
        return args;
    }
}

export class MoveDiskDialog extends CheckedDialog {
    constructor(dialog, onStarted) {
        super(dialog, "move", "#move-disk, #move-pool, #move-bandwidth", onStarted);
    }

    open(vm, caps) {
        const pools = (caps?.pools ?? []).filter(p => p.active).map(p => p.name);
        $(this.dialog, "#move-pool").replaceChildren(...pools.map(p => el("option", { value: p }, p)));
        this.show(vm);
    }

    /** `baton move-disk` arguments for what the form shows (without --keep-source). */
    moveArgs() {
        const d = this.dialog;
        const disk = $(d, "#move-disk").value.trim();
        const args = ["move-disk", this.vm.vm, ...(disk ? [disk] : []),
            "--to-pool", $(d, "#move-pool").value, "--host", this.vm.host];
        const bandwidth = $(d, "#move-bandwidth").value.trim();
        return bandwidth ? [...args, "--bandwidth", bandwidth] : args;
    }

    checkArgs() {
        if (!$(this.dialog, "#move-pool").value) {
            showError($(this.dialog, ".dialog-error"), `no active storage pool on ${this.vm.host}`);
            return null;
        }
        return [...this.moveArgs(), "--dry-run"];
    }

    startArgs() {
        return $(this.dialog, "#move-keep").checked ? [...this.moveArgs(), "--keep-source"] : this.moveArgs();
    }
}

export class BandwidthDialog {
    constructor(dialog, onChanged) {
        this.dialog = dialog;
        this.onChanged = onChanged;
        wireCancel(dialog);
        $(dialog, "#bandwidth-apply").addEventListener("click", () => this.apply());
    }

    open(record) {
        this.record = record;
        $(this.dialog, ".job-id").textContent = record.migration_id;
        $(this.dialog, "#bandwidth-value").value = record.bandwidth_mib_s ?? "";
        showError($(this.dialog, ".dialog-error"), "");
        this.dialog.showModal();
    }

    async apply() {
        try {
            const value = $(this.dialog, "#bandwidth-value").value.trim();
            const record = await baton.run(["bandwidth", this.record.migration_id, value]);
            this.dialog.close();
            this.onChanged(record);
        } catch (failure) {
            showError($(this.dialog, ".dialog-error"), failure.message);
        }
    }
}
