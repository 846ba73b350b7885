// Prasso Messaging admin: small progressive enhancements; every page works without them.
"use strict";

(function () {
  const STATUS_COLORS = {
    queued: "#9aa5b1", sent: "#2457c5", delivered: "#1f7a4d", failed: "#b42318", skipped: "#d98e04",
  };

  function showSubjectForType() {
    const type = document.getElementById("type");
    const field = document.getElementById("subject-field");
    if (!type || !field) return;
    const withSubject = (type.dataset.subjectTypes || "").split(",");
    // the subject shows for a type that has one, or a ticked fallback that does (SMS, then
    // email); the chosen type's own fallback box is no fallback and is hidden
    let needsSubject = withSubject.includes(type.value);
    document.querySelectorAll('input[name="fallback"]').forEach(function (box) {
      box.closest("label").hidden = box.value === type.value;
      if (box.checked && box.value !== type.value && withSubject.includes(box.value)) {
        needsSubject = true;
      }
    });
    field.hidden = !needsSubject;
    const footer = document.getElementById("sms-footer-hint");
    if (footer) footer.hidden = type.value !== "sms";
  }

  // Picking a template fills the type, subject and body from its current version.
  function fillFromTemplate(select) {
    const chosen = select.options[select.selectedIndex];
    if (!chosen || !chosen.value) return;
    document.getElementById("type").value = chosen.dataset.type;
    document.getElementById("subject").value = chosen.dataset.subject;
    document.getElementById("body").value = chosen.dataset.body;
    showSubjectForType();
    refreshOptions();
  }

  function chipKey(kind, id) { return kind + "-" + id; }

  function addChip(kind, id, name) {
    const chips = document.getElementById("selected-recipients");
    if (!chips || chips.querySelector('[data-key="' + chipKey(kind, id) + '"]')) return;
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.dataset.key = chipKey(kind, id);
    chip.append(name + " ");
    const small = document.createElement("small");
    small.textContent = kind;
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = kind + "_ids";
    input.value = id;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link remove-chip";
    remove.setAttribute("aria-label", "Remove " + name);
    remove.textContent = "×";
    chip.append(small, input, remove);
    chips.append(chip);
  }

  function removeChip(key) {
    const chip = document.querySelector('#selected-recipients [data-key="' + key + '"]');
    if (chip) chip.remove();
    const box = document.querySelector('#recipient-options .pick[data-kind="' + key.split("-")[0] +
      '"][data-id="' + key.split("-")[1] + '"]');
    if (box) box.checked = false;
  }

  function syncPicks() {
    document.querySelectorAll("#recipient-options .pick").forEach(function (box) {
      box.checked = !!document.querySelector(
        '#selected-recipients [data-key="' + chipKey(box.dataset.kind, box.dataset.id) + '"]');
    });
  }

  // The compose page's search and preview: each new request replaces the one in flight, which
  // is aborted and ends quietly (an AbortError is the expected end of a replaced request).
  const inFlight = {};

  function loadInto(target, url, init, then) {
    const key = target.id;
    if (inFlight[key]) inFlight[key].abort();
    const controller = new AbortController();
    inFlight[key] = controller;
    const options = Object.assign({ credentials: "same-origin", signal: controller.signal }, init);
    options.headers = { "HX-Request": "true" };  // a lapsed session answers 401 + HX-Redirect
    fetch(url, options)
      .then(function (response) {
        const redirect = response.headers.get("HX-Redirect");
        if (redirect) {
          window.location.assign(redirect);
          return;
        }
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.text().then(function (html) {
          target.innerHTML = html;
          if (then) then();
        });
      })
      .catch(function (error) {
        if (error.name === "AbortError") return;
        target.textContent = "Could not load this part of the page (" + error.message + ").";
      })
      .finally(function () {
        if (inFlight[key] === controller) delete inFlight[key];
      });
  }

  function debounce(action, ms) {
    let timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(action, ms);
    };
  }

  function refreshPreview() {
    const form = document.getElementById("compose-form");
    const preview = document.getElementById("preview");
    if (!form || !preview) return;
    loadInto(preview, form.dataset.previewUrl, { method: "POST", body: new FormData(form) });
  }

  function refreshOptions() {
    const search = document.getElementById("recipient-search");
    const options = document.getElementById("recipient-options");
    if (!search || !options) return;
    const transactional = document.getElementById("transactional");
    const params = new URLSearchParams({
      q: search.value,
      type: document.getElementById("type").value,
      transactional: transactional && transactional.checked ? "true" : "false",
    });
    loadInto(options, search.dataset.searchUrl + "?" + params, { method: "GET" }, syncPicks);
  }

  const previewSoon = debounce(refreshPreview, 300);
  const optionsSoon = debounce(refreshOptions, 200);

  document.addEventListener("input", function (event) {
    const target = event.target;
    if (target.type === "checkbox" || target.tagName === "SELECT") return;  // see "change"
    if (target.id === "recipient-search") optionsSoon();
    else if (target.closest && target.closest("#compose-form")) previewSoon();
  });

  document.addEventListener("change", function (event) {
    const target = event.target;
    if (target.id === "template") fillFromTemplate(target);
    if (target.id === "type" || target.name === "fallback") showSubjectForType();
    if (target.id === "type" || target.id === "transactional") refreshOptions();
    if (target.classList && target.classList.contains("pick")) {
      if (target.checked) addChip(target.dataset.kind, target.dataset.id, target.dataset.name);
      else removeChip(chipKey(target.dataset.kind, target.dataset.id));
    }
    if (target.id !== "recipient-search" && target.closest && target.closest("#compose-form")) {
      refreshPreview();
    }
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest(".remove-chip");
    if (!button) return;
    removeChip(button.closest(".chip").dataset.key);
    refreshPreview();
  });

  function stackedBars(canvas, labels, spec) {
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: spec.statuses.map(function (status) {
          return { label: status, data: spec.data[status], backgroundColor: STATUS_COLORS[status] };
        }),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function drawCharts() {
    const source = document.getElementById("chart-data");
    if (!source || !window.Chart) return;
    const windows = JSON.parse(source.dataset.charts);
    const timelines = JSON.parse(source.dataset.timelines);
    document.querySelectorAll("canvas[data-chart-index]").forEach(function (canvas) {
      const spec = windows[Number(canvas.dataset.chartIndex)];
      stackedBars(canvas, spec.channels, spec);
    });
    document.querySelectorAll("canvas[data-timeline-index]").forEach(function (canvas) {
      const spec = timelines[Number(canvas.dataset.timelineIndex)];
      stackedBars(canvas, spec.labels, spec);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    showSubjectForType();
    syncPicks();
    drawCharts();
    refreshPreview();
  });
})();
