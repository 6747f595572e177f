<?php
// Shared body of the scenario-4 page. The harness writes assets.txt (one
// "path as" pair a line) and page.html next to this file.
$assets = [];
foreach (file(__DIR__ . '/assets.txt', FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
    [$path, $as] = explode(' ', trim($line), 2);
    $assets[] = [$path, $as];
}
if ($send_links) {
    foreach ($assets as [$path, $as]) {
        // One Link header line per resource; `false` appends instead of replacing.
        header("Link: <$path>; rel=preload; as=$as", false);
    }
}
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');
readfile(__DIR__ . '/page.html');
