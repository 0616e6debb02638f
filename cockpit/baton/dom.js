/* Building elements without innerHTML: names of VMs and hosts are data, never markup. */

/** el("td", {class: "x", dataset: {id: 1}, onclick: f}, "text", child, ...) */
export function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
        if (value === null || value === undefined || value === false)
            continue;
        if (key === "dataset")
            Object.assign(node.dataset, value);
        else if (key.startsWith("on"))
            node.addEventListener(key.slice(2), value);
        else if (key in node && typeof value !== "string")
            node[key] = value;
        else
            node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
        if (child !== null && child !== undefined && child !== false)
            node.append(child instanceof Node ? child : String(child));
    }
    return node;
}

/** Replace a table body's rows; an empty list shows `empty` across the row. */
export function fillBody(table, rows, empty) {
    const body = table.tBodies[0];
    const columns = table.tHead.rows[0].cells.length;
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, empty))]));
}

export function showError(box, message) {
    box.textContent = message || "";
    box.hidden = !message;
}
