// The map page: the map and the list of active visitors, redrawn when someone arrives or leaves.

import { follow } from "/assets/common.js";
import { MapView } from "/assets/map.js";

const view = new MapView(document.getElementById("map"));
view.refresh();
follow({
  onVisit: () => view.refreshSoon(),
  onLeft: () => view.refreshSoon(),
  // Events sent while the stream was down are lost: load the whole map again.
  onOpen: () => view.refreshSoon(),
});
