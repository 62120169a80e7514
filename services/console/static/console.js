// SLA clocks count down in the page: each <time data-due> shows the time left until its deadline.
(function () {
  function span(seconds) {
    var sign = seconds < 0 ? "-" : "";
    seconds = Math.abs(seconds);
    var d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    if (d) return sign + d + "d " + two(h) + "h";
    if (h) return sign + h + "h " + two(m) + "m";
    return sign + m + "m " + two(s) + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-due]").forEach(function (el) {
      el.textContent = span(Math.floor((Date.parse(el.dataset.due) - now) / 1000));
    });
  }
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
