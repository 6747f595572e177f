<?php
// The same page without any Link header ("no hints" mode).
$send_links = false;
require __DIR__ . '/page.inc.php';
