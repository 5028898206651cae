//! The EWPM module registry: the one list of the modules this binary runs.
//!
//! Adding a service is one crate exporting a [`Module`], one line here, and its manifests
//! (k8s). `ewpm dev` starts every module in one process, `ewpm serve <name>` one module (or
//! one of its parts, `<name>-<part>`), `ewpm migrate` runs every module's migrator, in this
//! order.

use ewpm_kit::{module::Module, settings::Section};

/// Every module, in start and migration order.
pub static MODULES: &[&dyn Module] = &[
    &ewpm_challenge::MODULE,
    &ewpm_scan::MODULE,
    &ewpm_progress::MODULE,
    &ewpm_incentive::MODULE,
    &ewpm_quiz::MODULE,
    &ewpm_engagement::MODULE,
    &ewpm_leaderboard::MODULE,
];

/// Every module's settings section, for [`ewpm_kit::settings::Settings::load`].
pub fn sections() -> Vec<Section> {
    MODULES.iter().map(|m| m.section()).collect()
}

/// The module named `name`, or the part `name` names (`progress-writer`: the progress
/// module's `writer` part).
pub fn find(name: &str) -> Option<(&'static dyn Module, Option<&'static str>)> {
    MODULES.iter().find_map(|m| {
        if m.name() == name {
            return Some((*m, None));
        }
        let part = name.strip_prefix(m.name())?.strip_prefix('-')?;
        m.parts().iter().find(|p| p.name == part).map(|p| (*m, Some(p.name)))
    })
}

/// What `ewpm serve` takes: every module, every part (`<module>-<part>`) and `gateway`, each
/// with its help line.
pub fn serve_targets() -> Vec<(String, &'static str)> {
    let mut targets = Vec::new();
    for m in MODULES {
        targets.push((m.name().to_string(), m.about()));
        for p in m.parts() {
            targets.push((format!("{}-{}", m.name(), p.name), p.about));
        }
    }
    targets.push(("gateway".to_string(), "The REST edge (HTTP, in front of every service)"));
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_and_part_is_found_by_its_serve_name_and_names_are_unique() {
        let targets = serve_targets();
        let mut names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
        for name in names.iter().filter(|n| **n != "gateway") {
            let (module, part) = find(name).unwrap_or_else(|| panic!("{name} not found"));
            let expected = match part {
                Some(part) => format!("{}-{part}", module.name()),
                None => module.name().to_string(),
            };
            assert_eq!(&expected, name);
        }
        assert!(find("progress-nope").is_none() && find("nope").is_none());
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a serve name is taken twice");
    }

    #[test]
    fn the_registry_settings_take_every_module_section() {
        let vars = [("EWPM_PROGRESS__BATCH_SIZE".to_string(), "7".to_string())];
        let settings = ewpm_kit::settings::Settings::load_from(&vars, &sections()).unwrap();
        let progress: ewpm_progress::settings::ProgressSettings =
            settings.section("progress").unwrap();
        assert_eq!(progress.batch_size, 7);
    }
}
