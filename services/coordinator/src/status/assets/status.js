// Follows the coordinator's server-sent events and swaps in the changing part of the page.
// The HTML it receives was escaped by the server; nothing here builds markup from data.
(function () {
  "use strict";
  var main = document.getElementById("status");
  var live = document.getElementById("live");
  if (!main || !live || !window.EventSource) {
    return;
  }
  function show(text, state) {
    live.textContent = text;
    live.className = "live " + state;
  }
  var source = new EventSource("/events");
  source.addEventListener("open", function () {
    show("live", "on");
  });
  source.addEventListener("status", function (event) {
    main.innerHTML = event.data;
    show("live, updated " + new Date().toLocaleTimeString(), "on");
  });
  source.addEventListener("trouble", function (event) {
    show(event.data, "off");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      show("not updating: reload the page (you may need to sign in again)", "off");
    } else {
      show("reconnecting…", "off");
    }
  });
})();
