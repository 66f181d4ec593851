"""The vocabulary of the simulated worlds: domains, their places, things and verbs.

Each `World` is one domain (a restaurant kitchen, a hospital ward, a UNIX server...)
with locations, containers, items, documents, tools, people and the surface forms
of its commands. `FORMS` holds the generic command forms per action kind; a world
may add its own forms (or replace the generic ones, e.g. shell commands).

A form is ``(template, condition, goal phrase, description)`` where template,
condition and goal phrase use role slots: ``loc src item dst doc tool target
person topic record register dir obj``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Form = tuple[str, str, str, str]

FORMS: dict[str, list[Form]] = {
    "move": [
        ("go to {loc}", "the player has reached the {loc}", "go to the {loc}", "Walk to another location."),
        (
            "walk to {loc}",
            "the player has walked to the {loc}",
            "walk to the {loc}",
            "Walk over to a named place.",
        ),
        (
            "head to {loc}",
            "the player has headed to the {loc}",
            "head to the {loc}",
            "Head to one of the places you know about.",
        ),
        (
            "move to {loc}",
            "the player has moved to the {loc}",
            "move to the {loc}",
            "Move to an adjacent location.",
        ),
        ("enter {loc}", "the player has entered the {loc}", "enter the {loc}", "Enter a room or area."),
    ],
    "take": [
        (
            "take {item} from {src}",
            "the {item} has been taken from the {src}",
            "take the {item} from the {src}",
            "Take an item out of a container or off a shelf.",
        ),
        (
            "pick up {item}",
            "the {item} has been picked up",
            "pick up the {item}",
            "Pick up an object that is within reach.",
        ),
        (
            "grab {item} from {src}",
            "the {item} has been grabbed from the {src}",
            "grab the {item} from the {src}",
            "Grab something from where it is stored.",
        ),
        (
            "collect {item} from {src}",
            "the {item} has been collected from the {src}",
            "collect the {item} from the {src}",
            "Collect an item from its storage place.",
        ),
        ("fetch {item}", "the {item} has been fetched", "fetch the {item}", "Fetch an item and carry it."),
    ],
    "read": [
        (
            "read {doc}",
            "the {doc} has been read",
            "read the {doc}",
            "Read a document and learn what it says.",
        ),
        ("open {doc}", "the {doc} has been opened and read", "open the {doc}", "Open a document or file."),
        (
            "consult {doc}",
            "the {doc} has been consulted",
            "consult the {doc}",
            "Consult a reference document for instructions.",
        ),
        ("review {doc}", "the {doc} has been reviewed", "review the {doc}", "Review a document carefully."),
    ],
    "use": [
        (
            "use {tool} on {target}",
            "the {tool} has been used on the {target}",
            "use the {tool} on the {target}",
            "Use a tool or device on something.",
        ),
        (
            "apply {tool} to {target}",
            "the {tool} has been applied to the {target}",
            "apply the {tool} to the {target}",
            "Apply a tool or treatment to a target.",
        ),
        (
            "check {target} with {tool}",
            "the {target} has been checked with the {tool}",
            "check the {target} with the {tool}",
            "Check something with an instrument.",
        ),
        (
            "treat {target} with {tool}",
            "the {target} has been treated with the {tool}",
            "treat the {target} with the {tool}",
            "Work on a target with a tool.",
        ),
    ],
    "put": [
        (
            "put {item} in {dst}",
            "the {item} has been put in the {dst}",
            "put the {item} in the {dst}",
            "Put something you carry into a container or place.",
        ),
        (
            "place {item} on {dst}",
            "the {item} has been placed on the {dst}",
            "place the {item} on the {dst}",
            "Place an item on a surface.",
        ),
        (
            "store {item} in {dst}",
            "the {item} has been stored in the {dst}",
            "store the {item} in the {dst}",
            "Store an item where it belongs.",
        ),
        (
            "deliver {item} to {dst}",
            "the {item} has been delivered to the {dst}",
            "deliver the {item} to the {dst}",
            "Deliver an item to a place or person.",
        ),
    ],
    "talk": [
        (
            "ask {person} about {topic}",
            "the {person} has been asked about {topic}",
            "ask the {person} about {topic}",
            "Ask someone about a subject.",
        ),
        (
            "brief {person} on {topic}",
            "the {person} has been briefed on {topic}",
            "brief the {person} on {topic}",
            "Give someone a short update on a subject.",
        ),
        (
            "inform {person} about {topic}",
            "the {person} has been informed about {topic}",
            "inform the {person} about {topic}",
            "Tell someone what they need to know.",
        ),
    ],
    "record": [
        (
            "log {record} in {register}",
            "the {record} has been logged in the {register}",
            "log the {record} in the {register}",
            "Write an entry into a log or register.",
        ),
        (
            "record {record} in {register}",
            "the {record} has been recorded in the {register}",
            "record the {record} in the {register}",
            "Record a result in a register.",
        ),
        (
            "note {record} in {register}",
            "the {record} has been noted in the {register}",
            "note the {record} in the {register}",
            "Make a note in a register.",
        ),
        (
            "log {record} for {target} in {register}",
            "the {record} for the {target} has been logged in the {register}",
            "log the {record} for the {target} in the {register}",
            "Log a result about something in a register.",
        ),
        (
            "file {record} under {register}",
            "the {record} has been filed under the {register}",
            "file the {record} under the {register}",
            "File a record in the right place.",
        ),
    ],
}

# actions without placeholders (template, description)
ZERO_FORMS: list[tuple[str, str]] = [
    ("look around", "Describe the current location and what is visible."),
    ("check inventory", "List what you are carrying."),
    ("inventory", "Show the items you are carrying."),
    ("wait", "Let a few minutes pass."),
    ("list tasks", "Show the tasks that are still open."),
    ("check the time", "Look at the clock."),
    ("review the goal", "Remind yourself of what needs to be done."),
]

# distractor forms: (template, description); roles as above
DISTRACTOR_FORMS: list[tuple[str, str]] = [
    ("move {dir}", "Move one step in a direction."),
    ("inspect {obj}", "Look closely at an object."),
    ("examine {obj}", "Examine an object for details."),
    ("search {src}", "Search a container or shelf."),
    ("call {person}", "Phone a colleague."),
    ("wait for {person}", "Wait until someone arrives."),
]

DIRECTIONS = ("north", "south", "east", "west", "upstairs", "downstairs", "left", "right")

# placeholder name variants per role
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "loc": ("location", "place", "room", "area", "destination"),
    "src": ("container", "source", "storage", "shelf"),
    "item": ("item", "object", "thing", "supply"),
    "dst": ("container", "place", "spot", "receptacle"),
    "doc": ("document", "file", "note", "record"),
    "tool": ("tool", "device", "instrument", "equipment"),
    "target": ("target", "subject", "thing", "object"),
    "person": ("person", "colleague", "contact", "name"),
    "topic": ("topic", "subject", "matter"),
    "record": ("entry", "record", "result", "finding"),
    "register": ("register", "logbook", "log", "ledger"),
    "dir": ("direction", "way"),
    "obj": ("object", "item", "thing"),
}


@dataclass(frozen=True)
class World:
    """One domain's vocabulary."""

    key: str
    title: str
    keywords: tuple[str, ...]
    locs: tuple[str, ...]
    srcs: tuple[str, ...]
    dsts: tuple[str, ...]
    items: tuple[str, ...]
    docs: tuple[str, ...]
    tools: tuple[str, ...]
    targets: tuple[str, ...]
    people: tuple[str, ...]
    topics: tuple[str, ...]
    records: tuple[str, ...]
    registers: tuple[str, ...]
    purposes: tuple[str, ...]
    concerns: tuple[str, ...]
    specialities: tuple[str, ...]
    neighbours: tuple[str, ...]
    article: str = "the "
    forms: dict[str, list[Form]] = field(default_factory=dict)
    replace_forms: bool = False
    role_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def values(self, role: str) -> tuple[str, ...]:
        """The vocabulary of one role slot."""
        if role == "dir":
            return DIRECTIONS
        if role == "obj":
            return self.items + self.targets
        return getattr(self, role + "s") if role != "person" else self.people


def _w(key: str, title: str, **kw: object) -> World:
    data = {}
    for k, v in kw.items():
        data[k] = tuple(s.strip() for s in v.split("|")) if isinstance(v, str) and k != "article" else v
    return World(key=key, title=title, **data)  # type: ignore[arg-type]


WORLDS: tuple[World, ...] = (
    _w(
        "unix",
        "UNIX server administration",
        keywords="sysadmin|linux|unix|server|devops|administrator|shell|kernel|infrastructure|sre|backend|"
        "database|cloud|deployment|engineer|programmer|developer|software",
        locs="/var/log|/etc/nginx|/srv/backups|/home/deploy|/opt/app|/var/www|/etc/systemd/system|/tmp",
        srcs="backup01|build-server|staging|gitlab-runner|nas02|db-replica",
        dsts="/etc/nginx/conf.d|/srv/www|/home/deploy/.ssh|/opt/app/releases|/var/backups",
        items="app.conf.bak|id_ed25519.pub|backup-2024-03-01.tar.gz|fullchain.pem|dump.sql|release-1.4.2.tgz|"
        "hosts.bak|nginx.conf.orig",
        docs="error.log|syslog|README.md|crontab.txt|incident-notes.md|runbook.md|auth.log",
        tools="logrotate|fsck|certbot|rsync|pg_dump|journalctl",
        targets="nginx|postgresql|cron|sshd|docker|redis|haproxy",
        people="on-call engineer|DBA|team lead|security officer|release manager",
        topics="the outage|the certificate expiry|disk usage|the failed backup|the deploy window",
        records="maintenance-done|cert-renewed|incident-closed|backup-verified|patch-applied",
        registers="/var/log/maint.log|CHANGELOG.md|ops-journal.txt",
        purposes="before the nightly backup window|before the morning traffic peak|"
        "so the incident can be closed|"
        "before the audit on Friday",
        concerns="keeps the uptime above 99.9 percent|is migrating legacy services to containers|"
        "is tired of 3 a.m. pager alerts|hardens SSH access after a breach scare|"
        "automates certificate renewals",
        specialities="PostgreSQL tuning|Kubernetes clusters|network security|backup automation|log analysis",
        neighbours="helpdesk|newsroom|observatory",
        article="",
        replace_forms=True,
        forms={
            "move": [
                (
                    "cd {loc}",
                    "the working directory is {loc}",
                    "change into {loc}",
                    "Change the working directory.",
                )
            ],
            "read": [
                ("cat {doc}", "{doc} has been printed with cat", "print {doc}", "Print a file."),
                (
                    "less {doc}",
                    "{doc} has been paged through with less",
                    "page through {doc}",
                    "Page through a file.",
                ),
                ("tail {doc}", "the end of {doc} has been tailed", "tail {doc}", "Show the end of a file."),
            ],
            "take": [
                (
                    "scp {item} from {src}",
                    "{item} has been copied from {src}",
                    "copy {item} from {src}",
                    "Copy a file from a remote host.",
                ),
                (
                    "fetch {item} from {src}",
                    "{item} has been fetched from {src}",
                    "fetch {item} from {src}",
                    "Download a file from a host.",
                ),
            ],
            "put": [
                (
                    "cp {item} {dst}",
                    "{item} has been copied into {dst}",
                    "copy {item} into {dst}",
                    "Copy a file into a directory.",
                ),
                (
                    "mv {item} {dst}",
                    "{item} has been moved into {dst}",
                    "move {item} into {dst}",
                    "Move a file into a directory.",
                ),
            ],
            "use": [
                (
                    "systemctl restart {target}",
                    "{target} has been restarted with systemctl",
                    "restart {target}",
                    "Restart a system service.",
                ),
                (
                    "run {tool} on {target}",
                    "{tool} has been run on {target}",
                    "run {tool} on {target}",
                    "Run a maintenance tool against a service.",
                ),
            ],
            "talk": [
                (
                    "page {person} about {topic}",
                    "the {person} has been paged about {topic}",
                    "page the {person} about {topic}",
                    "Page a colleague.",
                )
            ],
            "record": [
                (
                    "append {record} to {register}",
                    "{record} has been appended to {register}",
                    "append {record} to {register}",
                    "Append a line to a log file.",
                )
            ],
        },
        role_names={
            "loc": ("path", "dir", "directory"),
            "doc": ("file", "logfile", "filename"),
            "item": ("file", "archive", "artifact"),
            "src": ("host", "server", "remote"),
            "dst": ("dest", "directory", "target_dir"),
            "target": ("service", "unit", "daemon"),
            "register": ("logfile", "journal"),
        },
    ),
    _w(
        "kitchen",
        "restaurant kitchen",
        keywords="chef|cook|kitchen|restaurant|sommelier|culinary|food|menu|catering|sous|dish|"
        "cuisine|bistro|diner",
        locs="walk-in fridge|dry store|pastry station|pass|dish pit|prep kitchen|loading door",
        srcs="top shelf|spice rack|ingredient bin|prep drawer|freezer chest|bread rack",
        dsts="bain-marie|service counter|mise en place tray|cold room|pass shelf",
        items="saffron|sourdough starter|veal stock|truffle oil|piping bag|vacuum bags|"
        "allergen labels|chef knife|"
        "crème fraîche|smoked paprika",
        docs="prep list|allergen matrix|supplier invoice|HACCP log|tasting menu card|order sheet",
        tools="thermometer probe|immersion blender|blast chiller|mandoline|torch",
        targets="stock pot|hollandaise|dough batch|fish delivery|lamb shoulder|consommé",
        people="sous chef|line cook|kitchen porter|restaurant supplier|health inspector|"
        "front-of-house manager",
        topics="the allergen change|tonight's covers|the late fish delivery|the new tasting menu",
        records="core temperature|waste figure|delivery check|cleaning sign-off",
        registers="HACCP log|waste sheet|temperature book",
        purposes="before the evening service|before the health inspection|for the wedding banquet at seven",
        concerns="is fighting food waste|worries about allergen mix-ups|wants a Michelin mention|"
        "trains apprentices on knife skills|sources vegetables from local farms",
        specialities="pastry|fermentation|fish butchery|plant-based menus|banquet catering",
        neighbours="bakery|farm|hotel",
        forms={
            "use": [
                (
                    "taste {target}",
                    "the {target} has been tasted",
                    "taste the {target}",
                    "Taste a dish to check its seasoning.",
                )
            ]
        },
    ),
    _w(
        "hospital",
        "hospital ward",
        keywords="nurse|doctor|hospital|ward|patient|clinic|medical|physician|surgeon|paramedic|health|"
        "caregiver|midwife|icu",
        locs="nurses' station|medication room|bay 4|side room 2|sluice room|ward corridor|treatment room",
        srcs="drug trolley|supply cupboard|controlled drugs cabinet|linen cart|crash trolley",
        dsts="patient locker|sharps bin|bedside table|specimen fridge|pneumatic tube station",
        items="saline flush|insulin pen|wound dressing|blood culture bottle|pulse oximeter|gloves|"
        "syringe driver|"
        "ID wristband",
        docs="drug chart|handover sheet|care plan|discharge letter|fluid balance chart|allergy card",
        tools="blood pressure cuff|glucometer|bladder scanner|infusion pump|thermometer",
        targets="patient in bed 3|IV line|surgical wound|catheter bag|pressure sore",
        people="ward sister|junior doctor|pharmacist|physiotherapist|healthcare assistant|patient's daughter",
        topics="the early warning score|the discharge plan|the new allergy|the night's observations",
        records="observation set|medication round|fluid balance|incident report",
        registers="observation chart|controlled drugs book|nursing notes",
        purposes="before the ward round|before the night shift handover|before the patient goes to theatre",
        concerns="is worried about staff burnout|fights hospital-acquired infections|"
        "mentors newly qualified nurses|wants safer medication rounds|"
        "cares for elderly patients with dementia",
        specialities="intensive care|paediatrics|geriatrics|oncology|emergency medicine",
        neighbours="pharmacy|vet|school",
    ),
    _w(
        "library",
        "library archive",
        keywords="librarian|library|archive|archivist|books|manuscript|catalog|catalogue|reading|historian|"
        "genealogist|collection|researcher",
        locs="reading room|closed stacks|conservation lab|rare books vault|map room|circulation desk",
        srcs="archive box 12|map drawer|returns trolley|acid-free folder|shelf C4",
        dsts="reading table|conservation tray|reshelving cart|hold shelf|digitisation queue",
        items="parish register|letter bundle|1912 city map|wax-sealed deed|photograph album|ledger volume",
        docs="finding aid|accession register|loan slip|catalogue card|donor agreement",
        tools="book cradle|soft brush|hygrometer|flatbed scanner|magnifier",
        targets="torn binding|mouldy folder|faded ink|curled map|loose pages",
        people="head archivist|visiting researcher|conservator|volunteer|reading room assistant",
        topics="the missing folio|the donation terms|humidity readings|the digitisation backlog",
        records="condition note|shelf mark|loan return|accession number",
        registers="accession register|conservation log|loans ledger",
        purposes="before the researcher arrives|before the reading room opens|for the centenary exhibition",
        concerns="wants to digitise fragile letters|worries about damp in the stacks|"
        "helps families trace their ancestry|fights budget cuts|catalogues a newly donated collection",
        specialities="medieval manuscripts|maps|photography collections|local history|digital preservation",
        neighbours="museum|court|school",
    ),
    _w(
        "warehouse",
        "warehouse logistics",
        keywords="warehouse|logistics|forklift|shipping|inventory|supply chain|picker|dispatcher|freight|"
        "delivery|courier|driver|depot|stock",
        locs="loading bay 3|aisle 14|cold store|returns area|dispatch office|mezzanine",
        srcs="pallet rack B2|bulk shelf|inbound pallet|tote 117|mezzanine bin",
        dsts="outbound dock|quarantine cage|shrink-wrap station|dispatch lane 2|returns cage",
        items="pallet of cat food|fragile parcel|scanner gun|shipping label|hi-vis vest|box of screws",
        docs="pick list|delivery note|bill of lading|stock report|damage report",
        tools="pallet jack|barcode scanner|label printer|stretch wrapper|forklift",
        targets="damaged pallet|mislabeled carton|container seal|inbound truck",
        people="shift supervisor|forklift driver|truck driver|stock controller|customs agent",
        topics="the missing pallet|the delayed truck|the stock discrepancy|the safety audit",
        records="goods receipt|stock count|damage claim|dispatch confirmation",
        registers="warehouse system|goods-in book|incident log",
        purposes="before the 6 a.m. truck leaves|before the stock audit|before the peak season rush",
        concerns="wants fewer mis-picks|worries about forklift safety|is cutting truck waiting times|"
        "runs the night shift|is introducing barcode scanning",
        specialities="cold chain|returns handling|cross-docking|hazardous goods|e-commerce fulfilment",
        neighbours="harbour|construction|bikeshop",
    ),
    _w(
        "chemlab",
        "chemistry lab",
        keywords="chemist|chemistry|laboratory|lab|scientist|researcher|reagent|phd|postdoc|biochem|analyst|"
        "teacher|experiment|student",
        locs="fume hood bay|balance room|solvent store|NMR room|wash-up area|instrument lab",
        srcs="flammables cabinet|reagent shelf|desiccator|cold room rack|sample freezer",
        dsts="waste container|sample rack|fume hood|glovebox|autosampler tray",
        items="sodium bicarbonate|acetone bottle|pipette tips|round-bottom flask|pH buffer|sample vial 7",
        docs="safety data sheet|lab notebook|method protocol|instrument logbook|risk assessment",
        tools="pH meter|rotary evaporator|analytical balance|HPLC|magnetic stirrer",
        targets="reaction mixture|buffer solution|unknown sample|crude product|spilled acid",
        people="lab manager|PhD student|safety officer|supervisor|technician",
        topics="the spill|the failed calibration|the reagent order|the thesis deadline",
        records="calibration result|yield|spill report|sample weight",
        registers="lab notebook|instrument logbook|chemical inventory",
        purposes="before the group meeting|before the safety inspection|before the sample degrades",
        concerns="wants reproducible results|worries about solvent safety|is writing up a thesis|"
        "teaches undergraduate practicals|runs a shared instrument facility",
        specialities="organic synthesis|analytical chemistry|electrochemistry|polymers|environmental testing",
        neighbours="pharmacy|school|observatory",
    ),
    _w(
        "farm",
        "garden and farm",
        keywords="farmer|farm|garden|gardener|orchard|agriculture|crops|greenhouse|beekeeper|"
        "allotment|grower|"
        "vineyard|horticulture|soil",
        locs="greenhouse|tool shed|orchard|compost heap|polytunnel|barn|vegetable beds",
        srcs="seed tin|potting bench|feed bin|tool rack|cold frame",
        dsts="raised bed 2|trailer|drying rack|farm shop crate|compost bin",
        items="tomato seedlings|seed potatoes|bag of bonemeal|pruning saw|egg basket|fleece cover",
        docs="planting calendar|soil test report|spray diary|market order|weather notes",
        tools="soil probe|secateurs|knapsack sprayer|rotavator|watering can",
        targets="apple trees|blighted potatoes|beehive 3|leaking irrigation pipe|compost pile",
        people="farm hand|neighbouring grower|agronomist|market gardener|beekeeper",
        topics="the late frost|the blight warning|the market order|the water shortage",
        records="harvest weight|spray application|rainfall|egg count",
        registers="spray diary|farm ledger|harvest book",
        purposes="before the frost tonight|before Saturday's market|before the inspector's visit",
        concerns="is switching to organic methods|worries about drought|sells at the farmers' market|"
        "keeps rare-breed hens|fights slugs in the vegetable beds",
        specialities="orchards|market gardening|beekeeping|soil health|greenhouse tomatoes",
        neighbours="kitchen|bakery|school",
    ),
    _w(
        "museum",
        "museum",
        keywords="museum|curator|exhibition|gallery|art|artifact|conservator|docent|collection|heritage|"
        "painting|sculpture|archaeologist",
        locs="east gallery|object store|conservation studio|loading dock|education room|crate store",
        srcs="display case 4|storage drawer|packing crate|plan chest|plinth",
        dsts="display case 7|quarantine room|condition-check table|crate|lightbox",
        items="bronze figurine|Roman coin|silk fan|label panel|cotton gloves|museum pass",
        docs="loan agreement|condition report|object file|exhibition plan|courier schedule",
        tools="UV torch|data logger|soft brush|digital microscope|light meter",
        targets="oil painting|tapestry|ceramic vase|flaking frame|showcase lock",
        people="registrar|lead curator|courier|art handler|visitor services manager",
        topics="the loan return|the light levels|the opening night|the damaged frame",
        records="condition check|light reading|object movement|loan receipt",
        registers="movement log|collections database|environment log",
        purposes="before the exhibition opens|before the courier arrives|before the insurance inspection",
        concerns="wants more school visits|worries about light damage|is returning looted objects|"
        "plans a blockbuster exhibition|runs a tiny volunteer-led museum",
        specialities="textiles|Roman archaeology|modern art|natural history|photography",
        neighbours="library|filmstudio|school",
    ),
    _w(
        "harbour",
        "ship and harbour",
        keywords="ship|harbour|harbor|port|sailor|captain|marine|boat|dock|fisherman|maritime|ferry|crew|"
        "navy|deckhand|fish|coastguard|mate|trawler",
        locs="quay 3|bridge|engine room|fish market|harbour office|chandlery|slipway",
        srcs="deck locker|net store|bosun's store|ice hold|chart table",
        dsts="cargo hold|fish boxes|life raft station|quay crane|customs shed",
        items="mooring line|VHF radio|life jacket|crate of mackerel|flare kit|spare impeller",
        docs="tide table|cargo manifest|logbook|weather forecast|crew list",
        tools="bilge pump|winch|boat hook|depth sounder|wrench",
        targets="fouled propeller|leaking hatch|mooring bollard|engine cooling system",
        people="harbour master|first mate|fish buyer|coastguard|ship's engineer",
        topics="the gale warning|the catch quota|the late ferry|the engine fault",
        records="departure time|catch weight|engine hours|fuel taken",
        registers="ship's log|harbour register|catch book",
        purposes="before the tide turns|before the gale arrives|before the morning fish auction",
        concerns="worries about fishing quotas|keeps an old wooden boat afloat|runs the night ferry|"
        "trains young deckhands|fights for a safer harbour wall",
        specialities="trawling|marine engines|navigation|ferry operations|sail repair",
        neighbours="warehouse|kitchen|observatory",
    ),
    _w(
        "filmstudio",
        "film studio",
        keywords="film|movie|director|producer|actor|studio|cinematographer|camera|editor|screenwriter|set|"
        "theatre|stage|production",
        locs="soundstage B|costume store|edit suite|prop room|green room|camera truck",
        srcs="prop shelf|camera case|costume rail|grip cart|hard drive rack",
        dsts="set table|camera dolly|wardrobe rail|continuity folder|edit bay",
        items="prop revolver|lens 50mm|period hat|clapperboard|hard drive 4|radio mic",
        docs="call sheet|shooting script|continuity notes|shot list|release form",
        tools="light meter|gaffer tape|focus puller's monitor|boom mic|fog machine",
        targets="key light|camera rig|actor's costume|rain machine|green screen",
        people="director|script supervisor|gaffer|lead actor|first AD",
        topics="the reshoot|the lost footage|tomorrow's call time|the weather delay",
        records="scene take|camera roll|continuity photo|overtime hours",
        registers="camera report|continuity log|production report",
        purposes="before the next take|before the light goes|before the producer's screening",
        concerns="is shooting a debut feature on a shoestring|worries about continuity errors|"
        "wants more diverse casting|edits documentaries|builds practical effects",
        specialities="documentaries|horror films|period dramas|animation|music videos",
        neighbours="newsroom|museum|hotel",
    ),
    _w(
        "school",
        "school",
        keywords="teacher|school|classroom|student|pupil|principal|headteacher|education|tutor|teaching|"
        "kindergarten|lesson|professor|lecturer",
        locs="classroom 12|staff room|science prep room|school office|library corner|playground",
        srcs="stock cupboard|marking pile|lost-and-found box|supply drawer|bookshelf",
        dsts="pupil's desk|homework tray|display board|head's office|parents' letter box",
        items="exam papers|microscope slides|reading books|first-aid kit|whiteboard markers|class register",
        docs="lesson plan|seating plan|behaviour log|exam timetable|permission slip",
        tools="projector|laminator|photocopier|visualiser|stopwatch",
        targets="broken projector|science experiment|class display|fire drill",
        people="teaching assistant|headteacher|parent|SEN coordinator|student council rep",
        topics="the school trip|the mock exams|a bullying incident|the new timetable",
        records="attendance|exam grade|incident note|reading level",
        registers="class register|markbook|incident log",
        purposes="before the bell rings|before parents' evening|before the inspection",
        concerns="worries about exam stress|teaches in an overcrowded class|runs the chess club|"
        "supports pupils with dyslexia|wants more outdoor learning",
        specialities="maths|primary reading|special educational needs|physics|music",
        neighbours="library|museum|chemlab",
    ),
    _w(
        "bakery",
        "bakery",
        keywords="baker|bakery|bread|pastry|patisserie|cake|dough|croissant|confectioner|oven|sourdough",
        locs="bakehouse|flour store|proving room|shop counter|cool room|back yard",
        srcs="flour sack|proving rack|butter fridge|seed bin|ingredient shelf",
        dsts="deck oven|cooling rack|shop display|delivery crate|proving basket",
        items="rye flour|sourdough levain|butter block|poppy seeds|baking trays|cake boxes",
        docs="production sheet|recipe card|wholesale order|allergen list|oven log",
        tools="dough scraper|proving thermometer|spiral mixer|laminator|scale",
        targets="rye dough|croissant batch|wedding cake|oven 2|sourdough loaves",
        people="head baker|bakery shop assistant|flour miller|café owner|apprentice baker",
        topics="the wholesale order|the oven fault|the gluten-free range|the flour price",
        records="bake temperature|batch count|dough temperature|waste",
        registers="production log|oven log|wholesale book",
        purposes="before the shop opens at seven|before the café delivery|for the Saturday market",
        concerns="gets up at 3 a.m. every day|worries about flour prices|wants to go fully organic|"
        "trains a new apprentice|supplies three cafés",
        specialities="sourdough|viennoiserie|wedding cakes|rye breads|gluten-free baking",
        neighbours="kitchen|farm|hotel",
    ),
    _w(
        "helpdesk",
        "IT helpdesk",
        keywords="helpdesk|support|technician|tech|computer|laptop|printer|network|office|technology|"
        "troubleshooting|ticket",
        locs="IT office|server cupboard|finance floor|meeting room 3|reception|storage room",
        srcs="spare parts drawer|returns shelf|cable box|laptop cart|toner shelf",
        dsts="user's desk|repair bench|asset cage|courier bag|charging locker",
        items="spare laptop|toner cartridge|USB-C dock|ethernet cable|security token|replacement keyboard",
        docs="ticket 4417|asset register|password policy|onboarding checklist|vendor manual",
        tools="cable tester|imaging USB stick|screwdriver kit|remote desktop tool|label maker",
        targets="jammed printer|frozen laptop|wifi access point|VPN client|shared mailbox",
        people="finance manager|new starter|IT manager|vendor engineer|receptionist",
        topics="the outage|the password reset|the new starter's laptop|the phishing email",
        records="ticket resolution|asset swap|time spent|root cause",
        registers="ticket system|asset register|change log",
        purposes="before the new starter arrives|before the board meeting|before the end of the shift",
        concerns="is drowning in password resets|worries about phishing|supports a small charity office|"
        "wants self-service fixes|looks after a school's laptops",
        specialities="printers|networking|Windows imaging|Apple devices|security awareness",
        neighbours="unix|newsroom|school",
    ),
    _w(
        "court",
        "court records office",
        keywords="court|lawyer|judge|clerk|legal|attorney|paralegal|law|solicitor|barrister|records|justice|"
        "notary",
        locs="records office|courtroom 2|judge's chambers|filing room|public counter|evidence store",
        srcs="case file cabinet|evidence locker|in-tray|archive box|sealed envelope",
        dsts="judge's bench|court file|out-tray|evidence bag|secure shelf",
        items="witness statement|exhibit 12|sealed order|case bundle|court stamp|USB of CCTV",
        docs="cause list|case file|court order|filing index|hearing notes",
        tools="date stamp|redaction pen|evidence scanner|document shredder|seal press",
        targets="case bundle|sealed envelope|exhibit list|public copy",
        people="court clerk|duty solicitor|judge's clerk|usher|journalist",
        topics="the adjournment|the missing exhibit|the hearing time|the redaction request",
        records="filing date|exhibit number|hearing outcome|fee payment",
        registers="case register|exhibits log|filing ledger",
        purposes="before the 10 a.m. hearing|before the filing deadline|before the appeal is lodged",
        concerns="worries about lost evidence|digitises old case files|helps people without lawyers|"
        "prepares appeals on tight deadlines|handles family court cases",
        specialities="family law|criminal appeals|land registry|immigration|tenancy disputes",
        neighbours="library|newsroom|helpdesk",
    ),
    _w(
        "pharmacy",
        "pharmacy",
        keywords="pharmacist|pharmacy|medicine|drug|prescription|chemist|dispensary|pharmaceutical|"
        "medication|drugstore",
        locs="dispensary|consultation room|stock room|shop floor|fridge area|delivery door",
        srcs="controlled drugs safe|dispensing shelf|pharmacy fridge|returns tub|stock tote",
        dsts="prescription bag|collection shelf|returns bin|delivery box|counter",
        items="amoxicillin capsules|insulin pens|inhaler|blister pack|dosette box|prescription pad",
        docs="prescription|drug interaction sheet|controlled drugs register|delivery note|patient record",
        tools="tablet counter|label printer|fridge thermometer|blood pressure monitor|pill splitter",
        targets="expired stock|prescription for Mr Patel|repeat order|cold chain delivery",
        people="pharmacy technician|GP|patient|delivery driver|locum pharmacist",
        topics="the drug shortage|the interaction warning|the missing delivery|the flu vaccines",
        records="dispensing check|fridge temperature|stock count|vaccination",
        registers="controlled drugs register|fridge log|dispensing log",
        purposes="before the patient comes back|before closing time|before the inspection",
        concerns="worries about medicine shortages|runs a busy village pharmacy|"
        "wants to catch dangerous interactions|offers flu vaccinations|helps elderly patients",
        specialities="oncology drugs|community pharmacy|hospital dispensing|vaccinations|compounding",
        neighbours="hospital|chemlab|vet",
    ),
    _w(
        "hotel",
        "hotel",
        keywords="hotel|concierge|housekeeping|receptionist|hospitality|guest|resort|inn|hostel|tourism|"
        "front desk|bellboy",
        locs="front desk|linen room|room 214|kitchen corridor|lobby|luggage room",
        srcs="key drawer|linen cart|minibar store|lost-property box|amenity shelf",
        dsts="guest room 214|luggage trolley|reception safe|housekeeping cart|lost-property shelf",
        items="key card|fresh towels|welcome pack|guest's suitcase|extra pillow|minibar refill",
        docs="booking list|housekeeping rota|guest complaint|lost property log|event sheet",
        tools="key encoder|vacuum cleaner|steam iron|walkie-talkie|maintenance kit",
        targets="broken AC unit|stained carpet|guest room 214|late checkout|door lock",
        people="night manager|housekeeper|guest in 214|porter|events coordinator",
        topics="the late checkout|the complaint|the VIP arrival|the overbooking",
        records="room status|complaint resolution|lost item|minibar charge",
        registers="guest ledger|housekeeping log|lost property log",
        purposes="before the VIP guest arrives|before check-in opens|before the wedding party",
        concerns="handles difficult guests calmly|runs a small family inn|worries about online reviews|"
        "is training new receptionists|wants greener housekeeping",
        specialities="luxury hotels|boutique inns|events|housekeeping|night audits",
        neighbours="kitchen|bakery|filmstudio",
    ),
    _w(
        "construction",
        "construction site",
        keywords="construction|builder|site|architect|engineer|contractor|carpenter|electrician|plumber|"
        "bricklayer|foreman|civil|surveyor|renovation",
        locs="site office|scaffold level 2|material yard|welfare cabin|basement pour|tool container",
        srcs="tool container|rebar stack|cement pallet|site van|fixings bin",
        dsts="scaffold level 2|skip|inspection table|formwork|delivery bay",
        items="hard hat|laser level|rebar bundle|bag of cement|torque wrench|harness",
        docs="method statement|site plan|permit to work|delivery schedule|inspection checklist",
        tools="concrete vibrator|laser level|angle grinder|moisture meter|torque wrench",
        targets="formwork|scaffold tie|steel beam|wet screed|trench",
        people="site manager|structural engineer|crane operator|building inspector|subcontractor",
        topics="the concrete pour|the crane booking|the failed inspection|the weather delay",
        records="pour time|inspection result|toolbox talk|near miss",
        registers="site diary|inspection register|accident book",
        purposes="before the concrete pour|before the inspector arrives|before the crane is booked",
        concerns="worries about falls from height|runs a small renovation firm|"
        "wants low-carbon concrete|fights delays on a hospital build|trains apprentices",
        specialities="timber frames|concrete|electrical installs|scaffolding|heritage restoration",
        neighbours="warehouse|unix|bikeshop",
    ),
    _w(
        "observatory",
        "observatory",
        keywords="astronomer|observatory|telescope|astronomy|stars|astrophysics|space|planet|physicist|"
        "stargazer|satellite",
        locs="dome|control room|workshop|data room|mirror lab|visitor centre",
        srcs="eyepiece case|filter drawer|spares cabinet|cable reel|tool board",
        dsts="instrument port|filter wheel|data archive|calibration bench|observation log",
        items="CCD camera|red torch|filter set|dew heater|star chart|spare cable",
        docs="observing plan|weather report|telescope manual|night log|target list",
        tools="collimator|spectrograph|focuser|laptop|dew shield",
        targets="main mirror|dome shutter|tracking mount|CCD sensor|comet target",
        people="telescope operator|visiting astronomer|instrument engineer|principal astronomer|"
        "outreach astronomer",
        topics="the cloud cover|the mount fault|the comet window|the public night",
        records="seeing measurement|exposure|dark frame|observation",
        registers="night log|data archive|maintenance log",
        purposes="before the comet sets|before dawn|before the public open night",
        concerns="hunts for exoplanets|worries about light pollution|runs public stargazing nights|"
        "maintains an ageing telescope|works nights and sleeps days",
        specialities="exoplanets|spectroscopy|variable stars|instrument building|comets",
        neighbours="chemlab|unix|school",
    ),
    _w(
        "bikeshop",
        "bike shop",
        keywords="bike|bicycle|cyclist|cycling|mechanic|repair|shop|courier|triathlete|mountain",
        locs="workshop|showroom|parts store|test track|back office|yard",
        srcs="parts drawer|tyre rack|chain bin|tool wall|customer rack",
        dsts="repair stand|customer rack|sale floor|returns box|delivery van",
        items="inner tube|chain|brake pads|derailleur hanger|tubeless sealant|gear cable",
        docs="job card|service checklist|parts order|warranty claim|price list",
        tools="chain tool|torque wrench|tyre lever|truing stand|cable cutter",
        targets="customer's road bike|rear derailleur|wheel|brake caliper|e-bike battery",
        people="shop owner|customer|parts supplier|junior mechanic|club rider",
        topics="the warranty claim|the broken frame|the race this weekend|the parts shortage",
        records="service done|parts used|warranty claim number|labour time",
        registers="job book|stock list|service history",
        purposes="before the customer collects|before the weekend race|before closing",
        concerns="wants more people cycling to work|fixes bikes for refugees|repairs e-bikes|"
        "races cyclocross|runs a cooperative shop",
        specialities="road bikes|e-bikes|wheel building|mountain bikes|vintage frames",
        neighbours="warehouse|construction|school",
    ),
    _w(
        "newsroom",
        "newsroom",
        keywords="journalist|reporter|newsroom|editor|news|newspaper|media|writer|blogger|podcast|columnist|"
        "photographer|broadcaster|press",
        locs="newsroom floor|editor's office|archive room|studio|print room|press room",
        srcs="tip box|archive cabinet|photo desk|inbox tray|press release pile",
        dsts="front page layout|editor's desk|publishing queue|fact-check folder|archive shelf",
        items="interview recording|press pass|photo print|leaked memo|notebook|USB stick",
        docs="draft article|source list|style guide|court report|embargo notice",
        tools="transcription software|voice recorder|camera|fact-check database|layout tool",
        targets="draft article|headline|quote from the mayor|photo caption|breaking story",
        people="news editor|photographer|sub-editor|source|lawyer",
        topics="the embargo|the legal risk|the front page|the correction",
        records="correction|source confirmation|word count|publication time",
        registers="corrections log|story budget|source log",
        purposes="before the print deadline|before the embargo lifts|before the evening bulletin",
        concerns="checks every quote twice|covers local council meetings|worries about misinformation|"
        "runs a small investigative podcast|fights for press freedom",
        specialities="investigations|local politics|sports|data journalism|photojournalism",
        neighbours="court|filmstudio|helpdesk",
    ),
    _w(
        "vet",
        "veterinary clinic",
        keywords="vet|veterinary|animal|pet|dog|cat|horse|zoo|shelter|groomer|livestock|wildlife",
        locs="consult room 1|kennel ward|operating theatre|dispensary|x-ray room|reception",
        srcs="drug cupboard|kennel cupboard|supply shelf|fridge|instrument tray",
        dsts="kennel 4|recovery cage|owner's carrier|sharps bin|autoclave",
        items="microchip scanner|cone collar|vaccine vial|bandage roll|treats|muzzle",
        docs="patient history|vaccination card|consent form|anaesthetic record|lab results",
        tools="stethoscope|otoscope|clippers|ultrasound probe|nail clippers",
        targets="limping labrador|nervous cat|rabbit's teeth|infected paw|stitches",
        people="veterinary nurse|pet owner|receptionist|locum vet|shelter volunteer",
        topics="the surgery risk|the vaccination schedule|the bill|the post-op care",
        records="weight|vaccination|temperature|treatment given",
        registers="clinical record|controlled drugs book|kennel sheet",
        purposes="before surgery at two|before the owner arrives|before the clinic closes",
        concerns="worries about antibiotic resistance|volunteers at a rescue shelter|treats farm animals|"
        "specialises in exotic pets|cares for ageing dogs",
        specialities="small animals|equine care|exotics|dentistry|emergency care",
        neighbours="farm|pharmacy|hospital",
    ),
    _w(
        "recording",
        "recording studio",
        keywords="musician|music|studio|recording|producer|sound|audio|band|singer|composer|dj|engineer|"
        "guitarist|drummer",
        locs="live room|control room|vocal booth|machine room|lounge|gear store",
        srcs="mic locker|cable trunk|guitar rack|hard drive shelf|patch bay drawer",
        dsts="mic stand|mixing desk|session drive|gear cage|artist's folder",
        items="condenser mic|pop filter|DI box|headphone amp|session drive|guitar strings",
        docs="session sheet|track list|lyric sheet|recall notes|booking form",
        tools="tuner|compressor|reference monitors|patch cable|metronome",
        targets="vocal take|snare drum|bass track|mix bus|guitar amp",
        people="lead singer|session drummer|mastering engineer|band manager|assistant engineer",
        topics="the vocal take|the mix notes|the deadline|the budget",
        records="take number|tempo|mix version|session hours",
        registers="session log|track sheet|booking diary",
        purposes="before the band arrives|before the mastering deadline|before the session ends",
        concerns="records local bands cheaply|worries about hearing damage|writes film scores|"
        "restores old tape recordings|teaches mixing online",
        specialities="mixing|live recording|podcast production|mastering|jazz sessions",
        neighbours="filmstudio|newsroom|school",
    ),
    _w(
        "firestation",
        "fire station",
        keywords="firefighter|fire|rescue|emergency|station|crew|paramedic|ambulance|dispatcher|safety",
        locs="appliance bay|watch room|drill yard|kit room|mess room|BA room",
        srcs="kit locker|equipment shelf|hose rack|BA cylinder rack|lifting gear box",
        dsts="fire engine|drying room|BA test bench|equipment shelf|defect tray",
        items="breathing apparatus set|thermal camera|hose length|hydraulic cutter|first aid bag|radio",
        docs="incident report|BA log|drill schedule|risk information sheet|vehicle checklist",
        tools="BA tester|pressure gauge|thermal camera|hose tester|torch",
        targets="fire engine|BA set 4|hose reel|ladder|hydrant",
        people="watch manager|crew commander|control operator|fire safety officer|new recruit",
        topics="the night's incident|the kit defect|the drill plan|the hydrant survey",
        records="BA test result|vehicle check|drill attendance|defect",
        registers="station log|BA log|defect book",
        purposes="before the shift change|before the next call-out|before the drill night",
        concerns="worries about crew fatigue|runs school fire-safety visits|trains new recruits|"
        "wants better thermal cameras|works on-call in a rural village",
        specialities="road traffic collisions|water rescue|fire investigation|high-rise fires|training",
        neighbours="hospital|construction|school",
    ),
)

WORLDS_BY_KEY: dict[str, World] = {w.key: w for w in WORLDS}

CITIES = (
    "Lyon",
    "Porto",
    "Leeds",
    "Osaka",
    "Nairobi",
    "Kraków",
    "Montréal",
    "Valparaíso",
    "Pune",
    "Tromsø",
    "Glasgow",
    "Bologna",
    "Austin",
    "Hanoi",
    "Cork",
    "Lagos",
    "Tallinn",
    "Seville",
    "Adelaide",
    "Bergen",
    "Cusco",
    "Ghent",
    "Leipzig",
    "Halifax",
    "Marseille",
    "Kyoto",
    "Accra",
    "Bristol",
    "Córdoba",
    "Brno",
    "Dunedin",
    "Tucson",
    "Aarhus",
    "Izmir",
    "Chennai",
    "Medellín",
    "Riga",
    "Quebec City",
    "Nantes",
    "Split",
    "Mombasa",
    "Galway",
    "Graz",
    "Busan",
    "Recife",
    "Utrecht",
    "Bilbao",
    "Turku",
    "Denver",
    "Windhoek",
    "Cardiff",
    "Lille",
    "Salzburg",
    "Cebu",
    "Perth",
    "Oaxaca",
    "Minneapolis",
    "Trieste",
    "Kaunas",
    "Dakar",
    "Aberdeen",
    "Nagoya",
    "Ljubljana",
    "Savannah",
    "Hobart",
    "Rennes",
    "Zanzibar",
    "Edmonton",
    "Genoa",
    "Tampere",
    "Kochi",
    "Asheville",
    "Plovdiv",
    "Bordeaux",
    "Jaipur",
    "Reykjavík",
    "Malmö",
    "Tbilisi",
    "Arequipa",
    "Bremen",
    "Sapporo",
    "Norwich",
    "Valencia",
    "Madison",
    "Coimbra",
    "Durban",
    "Innsbruck",
    "a small coastal town",
    "a mountain village",
    "a market town",
    "a suburb of Manila",
    "a village in Wales",
)
