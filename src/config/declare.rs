//! `sections!`: what one key declaration in `keys.rs` expands to.
//!
//! A section is one TOML table with its typed struct and its raw mirror:
//!
//! ```text
//! /// Doc comment of the typed struct.
//! [timeouts] Timeouts, RawTimeouts {
//!     /// Doc comment of the typed field.
//!     origin_connect: Duration = Duration::from_secs(5),
//!         from Loose, check positive_duration;
//!     // A file key that differs from the field name names both:
//!     max_idle_connections => max_idle_per_host: usize = 256,
//!         from i64, check count(0..=i64::MAX);
//! }
//! ```
//!
//! Each entry gives the file key (and the field name when it differs), the
//! typed field's type, its default, the type toml reads the value as, and
//! the parser that checks it (see `check.rs`). From it come:
//!
//! - `pub $field: $type` in the typed struct, with the doc comment;
//! - `$key: Option<$raw>` in the raw struct (`deny_unknown_fields`);
//! - the field's value in the typed struct's `Default`;
//! - a line in `$raw::check`, which parses the value and reports a bad one
//!   under `table.key`, spelled from the same tokens as the raw field;
//! - the key's name in `$raw::KEYS`, and the table in `SECTIONS`, which the
//!   tests hold against docs/configuration.md and proxy.toml;
//! - `$raw::check_over`, the same checks for a copy of the table written
//!   elsewhere (`[upstreams.NAME]`, a site's `[sites.push]`), over a base.
//!
//! An entry `by hand field: Type, from key: Raw;` declares a key that is
//! checked outside the macro (`origin.url`, which is required and so has no
//! default). A section with one gets no `Default`, and its `check` takes the
//! hand-checked value and returns `None` when that is missing.

macro_rules! sections {
    (
        $(
            $(#[$doc:meta])*
            [$table:ident] $name:ident, $raw:ident { $($body:tt)* }
        )*
    ) => {
        $(
            sections!(@munch ($(#[$doc])* [$table] $name $raw) [] [] $($body)*);
        )*

        /// Every table declared here with its keys, in file order.
        #[cfg(test)]
        pub(super) const SECTIONS: &[(&str, &[&str])] = &[$((stringify!($table), $raw::KEYS)),*];
    };

    // Sort the entries into hand-written and declared ones, each as
    // `([attributes] key field (type) ...)`.
    (@munch $head:tt [$($hand:tt)*] [$($plain:tt)*]
        $(#[$m:meta])* by hand $field:ident : $ty:ty, from $key:ident : $raw_ty:ty;
        $($rest:tt)*
    ) => {
        sections!(@munch $head
            [$($hand)* ([$(#[$m])*] $key $field ($ty) ($raw_ty))]
            [$($plain)*]
            $($rest)*);
    };
    (@munch $head:tt [$($hand:tt)*] [$($plain:tt)*]
        $(#[$m:meta])* $key:ident => $field:ident : $ty:ty = $default:expr,
            from $raw_ty:ty, check $parse:expr;
        $($rest:tt)*
    ) => {
        sections!(@munch $head
            [$($hand)*]
            [$($plain)* ([$(#[$m])*] $key $field ($ty) ($default) ($raw_ty) ($parse))]
            $($rest)*);
    };
    (@munch $head:tt [$($hand:tt)*] [$($plain:tt)*]
        $(#[$m:meta])* $key:ident : $ty:ty = $default:expr,
            from $raw_ty:ty, check $parse:expr;
        $($rest:tt)*
    ) => {
        sections!(@munch $head
            [$($hand)*]
            [$($plain)* ([$(#[$m])*] $key $key ($ty) ($default) ($raw_ty) ($parse))]
            $($rest)*);
    };

    // Every key declared: a section whose keys all have defaults.
    (@munch $head:tt [] [$($plain:tt)*]) => {
        sections!(@structs $head [] [$($plain)*]);
        sections!(@defaults $head [$($plain)*]);
    };
    // A section with hand-checked keys.
    (@munch $head:tt [$($hand:tt)+] [$($plain:tt)*]) => {
        sections!(@structs $head [$($hand)+] [$($plain)*]);
        sections!(@check_with_hand $head [$($hand)+] [$($plain)*]);
    };

    (@structs
        ($(#[$doc:meta])* [$table:ident] $name:ident $raw:ident)
        [$(([$(#[$hm:meta])*] $hkey:ident $hfield:ident ($hty:ty) ($hraw_ty:ty)))*]
        [$(([$(#[$m:meta])*] $key:ident $field:ident
            ($ty:ty) ($default:expr) ($raw_ty:ty) ($parse:expr)))*]
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $($(#[$hm])* pub $hfield: $hty,)*
            $($(#[$m])* pub $field: $ty,)*
        }

        #[doc = concat!("`[", stringify!($table), "]` as written in the file.")]
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $raw {
            $(pub(super) $hkey: Option<$hraw_ty>,)*
            $(pub(super) $key: Option<$raw_ty>,)*
        }

        #[cfg(test)]
        impl $raw {
            /// The keys of this table, in file order.
            pub(super) const KEYS: &'static [&'static str] =
                &[$(stringify!($hkey),)* $(stringify!($key),)*];
        }
    };

    (@defaults
        ($(#[$doc:meta])* [$table:ident] $name:ident $raw:ident)
        [$(([$(#[$m:meta])*] $key:ident $field:ident
            ($ty:ty) ($default:expr) ($raw_ty:ty) ($parse:expr)))*]
    ) => {
        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $raw {
            /// Checks every key, each problem under its key; an absent or bad
            /// value leaves the default.
            #[allow(dead_code)]
            pub(super) fn check(self, check: &mut Checker) -> $name {
                sections!(@parse check self $table [$(($key $field ($default) ($parse)))*]);
                $name { $($field,)* }
            }

            /// Checks every key as a table written at `path` (such as
            /// `upstreams.app` or `sites[0].push`); an absent or bad value
            /// leaves `base`'s.
            #[allow(dead_code)]
            pub(super) fn check_over(self, check: &mut Checker, base: &$name, path: &str) -> $name {
                let ($($field,)*) = ($(
                    match check.parse(
                        &format!("{path}.{}", stringify!($key)),
                        self.$key,
                        $parse,
                    ) {
                        Some(value) => value,
                        None => base.$field.clone(),
                    },
                )*);
                $name { $($field,)* }
            }
        }
    };

    (@check_with_hand
        ($(#[$doc:meta])* [$table:ident] $name:ident $raw:ident)
        [$(([$(#[$hm:meta])*] $hkey:ident $hfield:ident ($hty:ty) ($hraw_ty:ty)))*]
        [$(([$(#[$m:meta])*] $key:ident $field:ident
            ($ty:ty) ($default:expr) ($raw_ty:ty) ($parse:expr)))*]
    ) => {
        impl $raw {
            /// Checks every declared key, each problem under its key; an
            /// absent or bad value leaves the default. `None` when a
            /// hand-checked value is missing (its problem is already
            /// recorded).
            pub(super) fn check(self, check: &mut Checker, $($hfield: Option<$hty>),*)
                -> Option<$name>
            {
                sections!(@parse check self $table [$(($key $field ($default) ($parse)))*]);
                Some($name { $($hfield: $hfield?,)* $($field,)* })
            }
        }
    };

    // `let (field, ...) = (checked value or default, ...);`, in key order.
    // The fields are bound only once every value is parsed, so a field
    // never shadows a parser of the same name.
    (@parse $check:ident $this:ident $table:ident
        [$(($key:ident $field:ident ($default:expr) ($parse:expr)))*]
    ) => {
        let ($($field,)*) = ($(
            match $check.parse(
                concat!(stringify!($table), ".", stringify!($key)),
                $this.$key,
                $parse,
            ) {
                Some(value) => value,
                None => $default,
            },
        )*);
    };
}
