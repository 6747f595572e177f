<?php
// Page whose response carries one Link: rel=preload header per subresource.
$send_links = true;
require __DIR__ . '/page.inc.php';
