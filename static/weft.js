// Progressive enhancement only: every page works without this file.
(function () {
  // Times: show local time, keep UTC in the tooltip.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); }
    });
  }
  localTimes(document);
  // Replaces the page's <main> with a fresh copy, keeping what was typed in its
  // fields; never under someone typing.
  var fields = "input[name]:not([type=hidden]), select[name], textarea[name]";
  function refreshMain() {
    if (document.hidden) return;
    var main = document.querySelector("main");
    var active = document.activeElement;
    if (active && main.contains(active) && active.matches(fields)) return;
    fetch(location.href, { headers: { "X-Weft-Refresh": "1" } }).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
      if (!html) return;
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.querySelector("main");
      if (!fresh) return;
      var old = document.querySelector("main");
      old.querySelectorAll(fields).forEach(function (el) {
        var twin = fresh.querySelector(el.tagName + '[name="' + el.name + '"]');
        if (twin) { twin.value = el.value; }
      });
      old.replaceWith(fresh);
      localTimes(fresh);
    }).catch(function () {});
  }
  // Auto-refresh pages that show live state, without a full reload.
  var every = document.body.getAttribute("data-refresh");
  if (every) {
    setInterval(refreshMain, parseInt(every, 10) * 1000);
  }
  // A clear's or a mark's scope: changing a checkbox shows the new preview at once.
  document.querySelectorAll("form.scope input[type=checkbox]").forEach(function (box) {
    box.addEventListener("change", function () { box.form.submit(); });
  });
  // Follow the log of a running try.
  var log = document.getElementById("log");
  if (log && log.dataset.follow) {
    var timer = setInterval(function () {
      fetch(log.dataset.follow).then(function (r) {
        var state = r.headers.get("x-weft-try-state");
        return r.text().then(function (t) { return [t, state]; });
      }).then(function (x) {
        var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        log.textContent = x[0];
        if (atBottom) log.scrollTop = log.scrollHeight;
        // The try ended: its state, duration, exit code and error come with the page.
        if (x[1] !== "running") { clearInterval(timer); refreshMain(); }
      }).catch(function () {});
    }, 2000);
  }
})();
