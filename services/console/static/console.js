// The console's only script: progressive updates of server-rendered pages.
// Every page works without it; it reloads fragments and follows the live list.

/** Replaces the content of [data-live] elements every data-every ms. */
function followFragments() {
  for (const element of document.querySelectorAll("[data-live]")) {
    const every = Number(element.dataset.every ?? 3000);
    const refresh = async () => {
      try {
        const response = await fetch(element.dataset.live, { headers: { accept: "text/html" } });
        if (response.status === 401) return location.reload();
        element.innerHTML = await response.text();
        element.dataset.updated = new Date().toISOString();
      } catch {
        element.dataset.stale = "true";
      }
    };
    setInterval(refresh, every);
  }
}

/** Appends tweets from the server-sent events of [data-events]. */
function followEvents() {
  const list = document.querySelector("[data-events]");
  if (list === null) return;
  const counter = document.getElementById("live-count");
  let count = 0;
  const source = new EventSource(list.dataset.events);
  source.addEventListener("tweet", (event) => {
    const tweet = JSON.parse(event.data);
    const item = document.createElement("li");
    item.className = "tweet";
    const time = document.createElement("time");
    time.dateTime = tweet.createdAt;
    time.textContent = tweet.createdAt.slice(11, 19);
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = ` ${tweet.author?.id ?? tweet.userId}: `;
    item.append(time, author, document.createTextNode(tweet.text));
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
    count += 1;
    if (counter) counter.textContent = String(count);
  });
  source.addEventListener("signed-out", () => location.assign("/login?returnTo=/live"));
  source.addEventListener("problem", (event) => {
    const problem = JSON.parse(event.data);
    source.close();
    const item = document.createElement("li");
    item.className = "problem";
    item.setAttribute("role", "alert");
    item.textContent = `${problem.title}: ${problem.detail ?? ""} (HTTP ${problem.status})`;
    list.prepend(item);
  });
}

followFragments();
followEvents();
